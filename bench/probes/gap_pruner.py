"""Probe: does the ``gap`` pruner (``auto`` + the overfitting rule) beat regtune's default?

Three arms, all regtune's default arm of ``bench/search_efficiency.py`` (its task specs,
``run_arm``, samples accounting and ``Retrainer``): the default pruner, ``pruner: {name: gap,
options: {epochs: K, action: prune}}`` and the same with ``action: stop``. The sampler seed
stream is the same, so they start from the same TPE start-up trials. Each arm runs until it has
processed the same training samples, ``--trials`` x max_epochs x training rows. Printed per
seed and as medians: the single-run best val_loss, the returned config re-trained with
``--score-seeds`` seeds (mean val_loss and clean-test accuracy), samples, trials, pruned, and
trials the gap rule ended (``gap_ended``).

    cd bench && nice ../.venv/bin/python probes/gap_pruner.py --seeds 8 --trials 20 --epochs 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import optuna
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import search_efficiency as se


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=sorted(se.TASKS), default="digits-noisy")
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--trials", type=int, default=20, help="budget: trials x max_epochs")
    parser.add_argument("--max-epochs", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=3, help="the gap pruner's k")
    parser.add_argument("--score-seeds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    spec = se.study_spec(args.task, max_epochs=args.max_epochs)
    rows = se.train_rows(spec)
    max_epochs = int(spec.trainer_config["max_epochs"])
    budget = float(args.trials * max_epochs * rows)
    scorer = se.Retrainer(spec, args.score_seeds)
    arms: dict[str, se.Arm] = {"default": se.regtune_arm}
    for action in ("prune", "stop"):
        gap = {"pruner": {"name": "gap", "options": {"epochs": args.epochs, "action": action}}}
        arms[f"gap-{action} k={args.epochs}"] = se.candidate_arm(f"gap-{action}", gap)[1]
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in arms}
    for seed in range(args.seeds):
        for name, arm in arms.items():
            start = time.perf_counter()
            run = arm(spec, seed, rows, 100 * args.trials, budget)
            score, acc = scorer(run.best_params or None)
            row = {
                "seed": seed,
                "best_val_loss": run.best_at(budget),
                "retrained_val_loss": score,
                "retrained_test_acc": acc,
                "samples": run.samples,
                "trials": run.n_trials,
                "pruned": run.n_pruned,
                "gap_ended": sum(
                    "pruned_reason" in t.user_attrs or "stopped_reason" in t.user_attrs
                    for t in (run.study.trials if run.study else [])
                ),
                "wall_s": round(time.perf_counter() - start, 1),
            }
            results[name].append(row)
            print(name, json.dumps(row), flush=True)
    print(f"\n{args.task}: {args.seeds} seeds, budget {budget:.0f} samples, medians:")
    keys = (
        "best_val_loss",
        "retrained_val_loss",
        "retrained_test_acc",
        "samples",
        "trials",
        "pruned",
        "gap_ended",
    )
    for name, rows_ in results.items():
        medians = {k: round(statistics.median(r[k] for r in rows_), 4) for k in keys}
        print(f"  {name:10s} {json.dumps(medians)}")
    default = results["default"]
    for name in list(results)[1:]:
        pairs = list(zip(default, results[name], strict=True))
        wins = sum(g["retrained_val_loss"] < d["retrained_val_loss"] for d, g in pairs)
        ties = sum(g["retrained_val_loss"] == d["retrained_val_loss"] for d, g in pairs)
        print(f"  {name}: re-trained better on {wins}, equal on {ties} of {args.seeds} seeds")


if __name__ == "__main__":
    main()
