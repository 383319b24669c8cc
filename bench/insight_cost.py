"""What regtune's per-epoch insight metrics cost: epochs with them against the same training's
epochs without them, for the built-in digits MLP and the `insight-cnn` test plugin.

The insight metrics (trainers/insight.py): ``weight_l2`` and ``near_zero_frac`` over the weights,
and for a declared classifier ``val_nll``, ``val_acc``, ``val_ece`` (torchmetrics, 15 bins),
``train_nll``, ``train_acc`` and ``gap`` (the validation logits and an eval-mode forward pass
over a fixed 256-row training subset).

Each model trains through ``run_trial`` with ``insight_every=2``: even epochs compute the metrics,
odd epochs do not, and the training is the same either way (the script checks the objective's
curve against a run with ``insight_every=0`` and stops if it differs). An epoch's time runs from
one epoch's end to the next (training, validation, the metrics); a trial's ratio is its median
even epoch over its median odd epoch (epoch 0 left out), so every epoch with the metrics is
timed next to one without, under the same load of a shared machine. Times are CPU time (process
time: with one torch thread, the work done), wall time beside. The table shows each model's
median over the repeats: the cost of an epoch with the metrics (``CPU ratio``) and, from it, the
cost at the default cadence (`trainers.registry.DEFAULT_INSIGHT_EVERY`, every 2nd epoch:
``1 + (ratio - 1) / 2``). The last line is the larger of the latter: ``ratio: 1.02``. Not in
it: once per trial whose reported epoch the cadence skipped, the same metrics for that epoch
after training (one more computation, with a forward pass over the validation split).

    python bench/insight_cost.py                  # 30 epochs x 5 trials per model
    python bench/insight_cost.py --short          # 8 epochs x 2 trials
    python bench/insight_cost.py --models digits  # one model

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
from trainers.registry import DEFAULT_INSIGHT_EVERY, register_trainer

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


class _EpochClock:
    """A TrialObserver that notes the CPU and wall clocks at each epoch's end."""

    def __init__(self) -> None:
        self.cpu: list[float] = []
        self.wall: list[float] = []

    def on_start(self, trial: Any, params: Any) -> None:
        pass

    def on_epoch(self, trial: Any, record: Any) -> None:
        self.cpu.append(time.process_time())
        self.wall.append(time.perf_counter())

    def should_stop(self) -> bool:
        return False


def _trial(model: str, epochs: int, insight_every: int) -> tuple[_EpochClock, list[float]]:
    trial = optuna.trial.FixedTrial({})
    trial.set_user_attr("train_seed", 0)
    spec = _spec(model, epochs, insight_every)
    clock = _EpochClock()
    outcome = run_trial(trial, spec, clock)
    if outcome.epochs_run != epochs:
        raise SystemExit(f"{model}: ran {outcome.epochs_run} epochs, expected {epochs}")
    computed = ["gap" in r.metrics for r in outcome.history]
    if computed != [insight_every > 0 and e % max(insight_every, 1) == 0 for e in range(epochs)]:
        raise SystemExit(f"{model}: the metrics were not computed at cadence {insight_every}")
    return clock, [r.metrics[spec.metric] for r in outcome.history]


def _with_without(stamps: list[float]) -> tuple[float, float]:
    """Median epoch with the metrics (even epochs) and without (odd epochs), epoch 0 left out
    (it has no start mark and pays the first-call costs)."""
    took = {e: stamps[e] - stamps[e - 1] for e in range(1, len(stamps))}
    with_ = [t for e, t in took.items() if e % 2 == 0]
    without = [t for e, t in took.items() if e % 2 == 1]
    return _common.median(with_), _common.median(without)


def measure(model: str, epochs: int, repeats: int) -> dict[str, Any]:
    """``repeats`` trials at cadence 2: even epochs compute the metrics, odd ones do not, so
    each epoch with them is timed next to one without, under the same machine load."""
    _, off_curve = _trial(model, epochs, 0)
    cpu: list[tuple[float, float]] = []
    wall: list[tuple[float, float]] = []
    for _ in range(repeats):
        clock, curve = _trial(model, epochs, 2)
        if curve != off_curve:
            raise SystemExit(f"{model}: the training differs with and without the metrics")
        cpu.append(_with_without(clock.cpu))
        wall.append(_with_without(clock.wall))
    ratio = _common.median([w / wo for w, wo in cpu])
    return {
        "ratio": ratio,
        "default_ratio": 1 + (ratio - 1) / DEFAULT_INSIGHT_EVERY,
        "wall_ratio": _common.median([w / wo for w, wo in wall]),
        "epoch_ms": 1000 * _common.median([wo for _, wo in cpu]),
        "extra_ms": 1000 * _common.median([w - wo for w, wo in cpu]),
        "ratios": [w / wo for w, wo in cpu],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=5, help="trials per model")
    parser.add_argument("--short", action="store_true", help="8 epochs x 2 trials")
    parser.add_argument("--models", default="digits,cnn", help="comma list of digits, cnn")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: default)")
    args = parser.parse_args(argv)
    epochs, repeats = (8, 2) if args.short else (args.epochs, args.repeats)
    if epochs < 3 or repeats < 1:
        parser.error("--epochs must be >= 3 and --repeats >= 1")
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if not models or any(m not in ("digits", "cnn") for m in models):
        parser.error("--models: a comma list of digits, cnn")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    _common.quiet()
    if "cnn" in models:
        _ensure_cnn()
    names = {"digits": "digits-mlp", "cnn": "insight-cnn"}
    results = {m: measure(m, epochs, repeats) for m in models}
    print(
        f"epochs {epochs}, repeats {repeats}, torch threads {torch.get_num_threads()}: "
        "epochs with the metrics vs without, alternating within each trial"
    )
    rows = [
        [
            names[m],
            f"{r['epoch_ms']:.1f}",
            f"{r['extra_ms']:.2f}",
            f"{r['ratio']:.3f}",
            f"{r['wall_ratio']:.3f}",
            " ".join(f"{x:.3f}" for x in r["ratios"]),
            f"{r['default_ratio']:.3f}",
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
        f"at the default cadence ({DEFAULT_INSIGHT_EVERY})",
    ]
    print(_common.table(headers, rows))
    print(_common.ratio_line(max(r["default_ratio"] for r in results.values())))


if __name__ == "__main__":
    main()
