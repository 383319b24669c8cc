"""Probe behind docs/benchmarks-history.md, "Where a quarter of random search's samples goes".

Per seed: how many trials regtune's default (c) finishes within 25 % of random search's samples,
how many of those TPE proposed from its model (trial number >= TPE's start-up), and (c)'s reach
of random search's 30-trial best. Same arms, seeds and specs as ``bench/search_efficiency.py``.

    python bench/probes/startup_count.py --task digits-noisy --seeds 10
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import _common
import search_efficiency as se

TPE_STARTUP = 10  # Optuna's TPESampler default n_startup_trials, regtune's default sampler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=sorted(se.TASKS), default="digits-noisy")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--first-seed", type=int, default=0)
    args = parser.parse_args()
    _common.quiet()
    spec = se.study_spec(args.task)
    rows = se.train_rows(spec)
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        a = se.random_arm(spec, seed, rows, 30, math.inf)
        c = se.regtune_arm(spec, seed, rows, 240, a.samples)
        quarter = 0.25 * a.samples
        n_c = c.trials_within(quarter)
        reach = c.samples_to_reach(a.best_at(math.inf)) / a.samples
        print(
            f"seed {seed}: (c) trials within 25 %: {n_c} "
            f"(model-guided {max(0, n_c - TPE_STARTUP)}); (a) trials within 25 %: "
            f"{a.trials_within(quarter)}; (c) reach of (a)'s best {_common.fmt(reach, 3)}",
            flush=True,
        )


if __name__ == "__main__":
    main()
