"""What regtune's per-epoch insight metrics cost: training with them against the same training
without them, for the built-in digits MLP and the `insight-cnn` test plugin.

The insight metrics (trainers/insight.py): ``weight_l2`` and ``near_zero_frac`` over the weights,
and for a declared classifier ``val_nll``, ``val_acc``, ``val_ece`` (torchmetrics, 15 bins),
``train_nll``, ``train_acc`` and ``gap`` (a forward pass in eval mode over the validation loader
and a fixed training subset of up to 2,048 rows). Each model trains through ``run_trial`` twice
per repeat, alternately: with the insight metrics at the default cadence (every epoch) and
without them (``insight_every=0``); same seed, same parameters, same epochs (no early stopping),
so the training is the same (the script stops if the objective's values differ). The ratio of a
pair is the with/without CPU time of the whole trial (process time: with one torch thread it is
the work done, and other processes on a shared machine do not move it as they move wall time,
which is shown beside it); the table shows each model's median over the repeats and the extra
CPU time per epoch, and the last line is the larger of the two medians: ``ratio: 1.03``.

    python bench/insight_cost.py                  # 20 epochs x 7 repeats per model
    python bench/insight_cost.py --short          # 8 epochs x 3 repeats
    python bench/insight_cost.py --models digits  # one model
    python bench/insight_cost.py --every 2        # the cost at another cadence

One torch thread by default (small models on a shared machine; see bench/trainer_overhead.py).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import _common
import optuna
import torch

from trainers import ObjectiveSpec, SearchSpace, available_trainers, run_trial
from trainers.registry import register_trainer

PLUGIN_DIR = Path(__file__).resolve().parent.parent / "tests" / "plugin_pkg"
SPACE = SearchSpace.model_validate(
    {
        "dropout": {"fixed": 0.1},
        "weight_decay": {"fixed": 1e-4},
        "batch_size": {"fixed": 64},
        "patience": {"fixed": 10_000},
    }
)


def _ensure_cnn() -> None:
    """Register `insight-cnn` from tests/plugin_pkg when its distribution is not installed."""
    if "insight-cnn" in available_trainers():
        return
    sys.path.insert(0, str(PLUGIN_DIR))
    from regtune_test_plugin.insight_cnn import TRAINER

    register_trainer(TRAINER)


def _spec(model: str, epochs: int, insight_every: int) -> ObjectiveSpec:
    if model == "digits":
        return ObjectiveSpec(
            trainer="digits-mlp",
            trainer_config={"max_epochs": epochs},
            search_space=SPACE,
            metric="val_loss",
            insight_every=insight_every,
        )
    return ObjectiveSpec(
        trainer="insight-cnn",
        trainer_config={"max_epochs": epochs},
        search_space=SPACE,
        metric="val_nll_custom",
        insight_every=insight_every,
    )


def _timed(model: str, epochs: int, insight_every: int) -> tuple[float, float, list[float]]:
    """CPU seconds, wall seconds and the objective's curve of one trial."""
    trial = optuna.trial.FixedTrial({})
    trial.set_user_attr("train_seed", 0)
    spec = _spec(model, epochs, insight_every)
    start, cpu_start = time.perf_counter(), time.process_time()
    outcome = run_trial(trial, spec)
    cpu, elapsed = time.process_time() - cpu_start, time.perf_counter() - start
    if outcome.epochs_run != epochs:
        raise SystemExit(f"{model}: ran {outcome.epochs_run} epochs, expected {epochs}")
    has = "gap" in outcome.history[0].metrics  # epoch 0 is always due
    if has != (insight_every > 0):
        raise SystemExit(f"{model}: insight_every={insight_every} but gap present={has}")
    return cpu, elapsed, [r.metrics[spec.metric] for r in outcome.history]


def measure(model: str, epochs: int, repeats: int, every: int = 1) -> dict[str, Any]:
    """Alternate with/without for ``repeats`` pairs; per-pair CPU-time and wall-time ratios."""
    _timed(model, 1, 1)  # warm-up: imports, data loading, first-call allocations
    cpu: list[tuple[float, float]] = []
    wall: list[tuple[float, float]] = []
    for _ in range(repeats):
        with_cpu, with_wall, with_curve = _timed(model, epochs, every)
        without_cpu, without_wall, without_curve = _timed(model, epochs, 0)
        if with_curve != without_curve:
            raise SystemExit(f"{model}: the training differs with and without the metrics")
        cpu.append((with_cpu, without_cpu))
        wall.append((with_wall, without_wall))
    return {
        "ratio": _common.median([w / wo for w, wo in cpu]),
        "wall_ratio": _common.median([w / wo for w, wo in wall]),
        "epoch_ms": 1000 * _common.median([wo for _, wo in cpu]) / epochs,
        "extra_ms": 1000 * _common.median([w - wo for w, wo in cpu]) / epochs,
        "ratios": [w / wo for w, wo in cpu],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--short", action="store_true", help="8 epochs x 3 repeats")
    parser.add_argument("--models", default="digits,cnn", help="comma list of digits, cnn")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: default)")
    parser.add_argument(
        "--every", type=int, default=1, help="the cadence measured (1: the default, every epoch)"
    )
    args = parser.parse_args(argv)
    epochs, repeats = (8, 3) if args.short else (args.epochs, args.repeats)
    if epochs < 1 or repeats < 1 or args.every < 1:
        parser.error("--epochs, --repeats and --every must be >= 1")
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if not models or any(m not in ("digits", "cnn") for m in models):
        parser.error("--models: a comma list of digits, cnn")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    _common.quiet()
    if "cnn" in models:
        _ensure_cnn()
    names = {"digits": "digits-mlp", "cnn": "insight-cnn"}
    results = {m: measure(m, epochs, repeats, args.every) for m in models}
    print(
        f"epochs {epochs}, repeats {repeats}, torch threads {torch.get_num_threads()}, "
        f"insight every {args.every} epoch(s) vs off"
    )
    rows = [
        [
            names[m],
            f"{r['epoch_ms']:.1f}",
            f"{r['extra_ms']:.2f}",
            f"{r['ratio']:.3f}",
            f"{r['wall_ratio']:.3f}",
            " ".join(f"{x:.3f}" for x in r["ratios"]),
        ]
        for m, r in results.items()
    ]
    headers = [
        "trainer",
        "epoch CPU ms",
        "extra CPU ms/epoch",
        "CPU ratio",
        "wall ratio",
        "CPU ratios",
    ]
    print(_common.table(headers, rows))
    print(_common.ratio_line(max(r["ratio"] for r in results.values())))


if __name__ == "__main__":
    main()
