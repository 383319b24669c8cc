"""Probe behind docs/benchmarks-history.md, "Re-training the top configurations before choosing".

Does spending part of the budget on re-training the best few configurations (and choosing by
the mean of their runs) return a better configuration than choosing by one run? Per seed:
regtune's default search (c) on (1 - reserve) of random search's samples, then its ``k`` best
COMPLETE configurations re-trained ``r`` times each (training seeds 2001.., other than the
scoring seeds), the one with the lowest mean over its 1 + r runs chosen. Every returned config —
random search's after 30 trials, (c)'s at random's samples, (c)'s at (1 - reserve), and the
confirmed one — is scored by its mean over 3 re-trainings with seeds 1001..1003
(``search_efficiency.Retrainer``).

    python bench/probes/confirm_top_k.py --task digits-noisy --seeds 10
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

import optuna

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import _common
import search_efficiency as se

from service.spec import StudySpec

CONFIRM_SEED_BASE = 2000


def finished_within(run: se.ArmRun, budget: float) -> list[optuna.trial.FrozenTrial]:
    """The COMPLETE trials among those `run` finished within `budget` samples (finish order)."""
    assert run.study is not None
    finished = run.study.trials[: run.trials_within(budget)]
    return [t for t in finished if t.state == optuna.trial.TrialState.COMPLETE]


def confirm(
    spec: StudySpec, rows: int, trials: list[optuna.trial.FrozenTrial], k: int, r: int
) -> tuple[dict[str, Any], int]:
    """The config of the `k` best trials with the lowest mean over its run and `r` re-trainings,
    and the samples the re-trainings cost."""
    retrainer = se.Retrainer(spec, r, seed_base=CONFIRM_SEED_BASE)
    scored: list[tuple[float, dict[str, Any]]] = []
    for trial in sorted(trials, key=lambda t: float(t.value or math.inf))[:k]:
        values = [float(trial.value or math.inf), *retrainer.runs(dict(trial.params))]
        scored.append((sum(values) / len(values), dict(trial.params)))
    return min(scored, key=lambda item: item[0])[1], retrainer.epochs_trained * rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=sorted(se.TASKS), default="digits-noisy")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--k", type=int, default=3, help="configurations re-trained")
    parser.add_argument("--r", type=int, default=2, help="re-trainings of each")
    parser.add_argument("--reserve", type=float, default=0.25, help="budget kept for them")
    args = parser.parse_args()
    _common.quiet()
    spec = se.study_spec(args.task)
    rows = se.train_rows(spec)
    scorer = se.Retrainer(spec, 3)
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        a = se.random_arm(spec, seed, rows, 30, math.inf)
        c = se.regtune_arm(spec, seed, rows, 240, a.samples)
        search_budget = (1 - args.reserve) * a.samples
        plain = c.incumbent_at(search_budget)
        picked, extra = confirm(spec, rows, finished_within(c, search_budget), args.k, args.r)
        used = c.curve[c.trials_within(search_budget) - 1][0] + extra
        scores = [scorer(p)[0] for p in (a.best_params, c.incumbent_at(a.samples), plain, picked)]
        print(
            f"seed {seed}: re-trained (a) {scores[0]:.4f}, (c) {scores[1]:.4f}; (c) at "
            f"{1 - args.reserve:.0%} {scores[2]:.4f} -> confirmed top {args.k} x {args.r} "
            f"{scores[3]:.4f} (pick changed: {picked != plain}; samples {used / a.samples:.2f} "
            "of (a)'s)",
            flush=True,
        )


if __name__ == "__main__":
    main()
