"""Probe behind docs/benchmarks-history.md, "How flat the optimum is".

Can a task separate tuners at all? Random configurations of the task's search space, each
re-trained with ``R`` training seeds (1001..), give each config's mean best val_loss and the
training noise (pooled within-config standard deviation). A task whose near-optimal region
(configs within one noise standard deviation of the best mean) is a large share of the space
is one where random search's 30 trials already land near the optimum, and where a search
strategy can only beat them by luck.

    python bench/probes/flatness.py --task digits-noisy --configs 20 --repeats 3
    python bench/probes/flatness.py --task synthetic --set n_samples=1500 --set n_features=60
    python bench/probes/flatness.py --task synthetic-wide --configs 40 --repeats 2
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

import optuna

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import _common
import search_efficiency as se


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=sorted(se.TASKS), default="digits-noisy")
    parser.add_argument("--configs", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=JSON", help="trainer_config override"
    )
    args = parser.parse_args()
    _common.quiet()
    overrides = {k: json.loads(v) for k, _, v in (item.partition("=") for item in args.set)}
    spec = se.study_spec(args.task, config_overrides=overrides)
    scorer = se.Retrainer(spec, args.repeats)
    sampler = optuna.samplers.RandomSampler(seed=args.seed)
    study = optuna.create_study(sampler=sampler)
    distributions = spec.search_space.distributions()
    means: list[float] = []
    variances: list[float] = []
    for i in range(args.configs):
        trial = study.ask(distributions)
        values = scorer.runs(trial.params)
        study.tell(trial, 0.0)
        finite = [v for v in values if math.isfinite(v)]
        means.append(statistics.fmean(finite) if finite else math.inf)
        if len(finite) > 1:
            variances.append(statistics.variance(finite))
        print(f"config {i}: {', '.join(f'{v:.4f}' for v in values)}", flush=True)
    noise = math.sqrt(statistics.fmean(variances))
    ranked = sorted(m for m in means if math.isfinite(m))
    best = ranked[0]
    near = sum(1 for m in ranked if m <= best + noise) / len(means)
    median = statistics.median(ranked)
    print(
        f"{args.task} {overrides or ''}: best mean {best:.4f}, median {median:.4f}, "
        f"spread of means (sd) {statistics.stdev(ranked):.4f}, training noise (sd) {noise:.4f}; "
        f"near-optimal share {near:.2f} -> 30 random trials include one with probability "
        f"{1 - (1 - near) ** 30:.2f}"
    )


if __name__ == "__main__":
    main()
