"""Gate reliability: false alarms and detections of `regtune tune --baseline` over simulated PRs.

Task: the built-in ``digits-mlp`` with 40 % label noise on train and validation labels, 30
epochs, hidden sizes 128-128 (search_efficiency.py's digits-noisy task), objective val_loss
(minimize). The baseline's chosen configuration is fixed (``PARAMS``, a config on the digits
plateau). Each simulated pull request re-trains it ``R`` times with fresh training seeds (the
trainer config's ``train_seed``; same data split) as the baseline, and ``R`` times more for each
kind of change:

(a) no change but the training seed (the same config and width);
(b) slightly worse: a third of the hidden width (43-43);
(c) clearly worse: a sixteenth of the hidden width (8-8).

Every PR has its own baseline runs and seeds, so PRs are independent. On each PR the gate's
decision function (``service.tune.gate.evaluate``, what ``regtune tune`` calls) judges:

- today's gate: single runs (the first run of each side), ``--max-regression 0.01``;
- the new gate: all R runs of each side, ``--max-regression 0.01 --alpha 0.05`` (a regression
  when the new mean is worse by more than 0.01 AND the one-sided Welch test rejects);
- the new gate with ``--max-regression 0`` (the test alone).

Reported: the share of PRs each gate flags per change, with a 95 % Clopper-Pearson interval,
and the mean worsening of each change. Targets (issue 19): false alarms on (a) <= 5 %,
detection of (b) >= 80 %. Raw runs go to ``bench/out/gate_reliability.json``. Headline: the new
gate's detection rate on (b).

    python bench/gate_reliability.py             # 40 PRs, 5 runs per side (~20 min, 1 core)
    python bench/gate_reliability.py --first-pr 40   # the next 40 PRs (own seeds)
    python bench/gate_reliability.py --short     # 3 PRs, 2 runs, 3 epochs (output shape only)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import _common
import optuna
from scipy import stats

from service.spec import StudySpec
from service.tune.gate import GateOptions, evaluate
from trainers import ObjectiveSpec, TrialDiverged, run_trial

METRIC, DIRECTION = "val_loss", "minimize"
TRAINER_CONFIG: dict[str, Any] = {"max_epochs": 30, "hidden_sizes": [128, 128], "label_noise": 0.4}
# the baseline's chosen config: on the digits plateau (docs/benchmarks.md, "Search efficiency")
PARAMS: dict[str, Any] = {
    "weight_decay": 1e-3,
    "l1": 0.0,
    "dropout": 0.3,
    "label_smoothing": 0.1,
    "batch_size": 64,
    "patience": 5,
}
CHANGES: dict[str, list[int]] = {
    "a seed only": [128, 128],
    "b width / 3": [43, 43],
    "c width / 16": [8, 8],
}
MAX_REGRESSION = 0.01
ALPHA = 0.05
SEED_BASE = 100_000  # training seeds: SEED_BASE * (1 + side) + 100 * pr + run


def objective_spec(hidden_sizes: list[int], max_epochs: int | None = None) -> ObjectiveSpec:
    """The digits task with the fixed config and `hidden_sizes`; one torch thread."""
    config = {**TRAINER_CONFIG, "hidden_sizes": hidden_sizes}
    if max_epochs is not None:
        config["max_epochs"] = max_epochs
    spec = StudySpec.model_validate(
        {
            "name": "bench-gate",
            "trainer": "digits-mlp",
            "trainer_config": config,
            "search_space": {name: {"fixed": value} for name, value in PARAMS.items()},
            "objective": {"metric": METRIC, "direction": DIRECTION},
        }
    )
    return dataclasses.replace(spec.objective_spec(), torch_threads=1)


def train(spec: ObjectiveSpec, seed: int) -> float:
    """The best val_loss of one training with `seed` (inf when it diverged)."""
    target = dataclasses.replace(spec, trainer_config={**spec.trainer_config, "train_seed": seed})
    try:
        return run_trial(optuna.trial.FixedTrial({}), target).value
    except TrialDiverged:
        return float("inf")


def seeds(side: int, pr: int, repeats: int) -> list[int]:
    """Training seeds of one side (0 baseline, 1.. the changes) of one PR: never shared."""
    return [SEED_BASE * (1 + side) + 100 * pr + k for k in range(repeats)]


Gate = Callable[[Sequence[float], Sequence[float]], bool]


def today_gate(baseline: Sequence[float], new: Sequence[float]) -> bool:
    """Flags a regression (True) on single runs: the first run of each side."""
    options = GateOptions(baseline_value=baseline[0], max_regression=MAX_REGRESSION)
    return not evaluate(new[0], METRIC, DIRECTION, options).passed


def new_gate(max_regression: float) -> Gate:
    def gate(baseline: Sequence[float], new: Sequence[float]) -> bool:
        options = GateOptions(
            baseline_value=baseline[0],
            max_regression=max_regression,
            alpha=ALPHA,
            baseline_values=tuple(baseline),
        )
        verdict = evaluate(new[0], METRIC, DIRECTION, options, tuple(new))
        assert verdict.checks[0].test is not None  # repeats on both sides: the Welch test ran
        return not verdict.passed

    return gate


NEW = f"new (Welch, alpha {ALPHA:g}, max-regression {MAX_REGRESSION:g})"  # the headline's
GATES: dict[str, Gate] = {
    f"today (single runs, max-regression {MAX_REGRESSION:g})": today_gate,
    NEW: new_gate(MAX_REGRESSION),
    f"new (Welch, alpha {ALPHA:g}, max-regression 0)": new_gate(0.0),
}


def simulate(prs: int, repeats: int, first_pr: int, max_epochs: int | None) -> dict[str, Any]:
    """Train every PR's baseline and changed runs; returns the raw values."""
    specs = {name: objective_spec(width, max_epochs) for name, width in CHANGES.items()}
    baseline_spec = specs["a seed only"]  # the same config and width as the baseline
    runs: list[dict[str, list[float]]] = []
    for pr in range(first_pr, first_pr + prs):
        start = time.perf_counter()
        one = {"baseline": [train(baseline_spec, s) for s in seeds(0, pr, repeats)]}
        for side, (name, spec) in enumerate(specs.items(), start=1):
            one[name] = [train(spec, s) for s in seeds(side, pr, repeats)]
        runs.append(one)
        print(
            f"PR {pr}: baseline {statistics.fmean(one['baseline']):.4f}, "
            + ", ".join(f"{n[0]} {statistics.fmean(one[n]):.4f}" for n in CHANGES)
            + f" ({time.perf_counter() - start:.0f} s)",
            flush=True,
        )
    return {"prs": prs, "repeats": repeats, "first_pr": first_pr, "runs": runs}


def rate(flags: list[bool]) -> str:
    """`k/n (p %, 95 % CI lo-hi %)` with the Clopper-Pearson interval."""
    k, n = sum(flags), len(flags)
    ci = stats.binomtest(k, n).proportion_ci(0.95)
    return f"{k}/{n} ({100 * k / n:.0f} %, {100 * ci.low:.0f}-{100 * ci.high:.0f})"


def summarize(raw: dict[str, Any]) -> tuple[str, dict[str, dict[str, float]]]:
    """The table (one row per gate, one column per change) and the flag rates."""
    runs = raw["runs"]
    rates: dict[str, dict[str, float]] = {}
    rows = []
    for label, gate in GATES.items():
        cells = []
        rates[label] = {}
        for change in CHANGES:
            flags = [gate(pr["baseline"], pr[change]) for pr in runs]
            rates[label][change] = sum(flags) / len(flags)
            cells.append(rate(flags))
        rows.append([label, *cells])
    worse = [
        "mean worsening (median over PRs)",
        *(
            _common.median(
                [statistics.fmean(pr[c]) - statistics.fmean(pr["baseline"]) for pr in runs]
            )
            for c in CHANGES
        ),
    ]
    spread = statistics.fmean(statistics.stdev(pr["baseline"]) for pr in runs)
    headers = ["gate: PRs flagged", *(f"({c})" for c in CHANGES)]
    text = _common.table(headers, [*rows, worse], digits=3)
    text += (
        f"\n{len(runs)} PRs, {raw['repeats']} runs per side; baseline val_loss sd across "
        f"training seeds {spread:.4f} (mean over PRs)"
    )
    return text, rates


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--short", action="store_true", help="3 PRs, 2 runs, 3 epochs")
    parser.add_argument("--prs", type=int, default=None, help="simulated PRs (default 40)")
    parser.add_argument("--repeats", type=int, default=None, help="runs per side (default 5)")
    parser.add_argument("--first-pr", type=int, default=0, help="seed offset (split a run)")
    parser.add_argument("--max-epochs", type=int, default=None)
    args = parser.parse_args(argv)
    prs = args.prs or (3 if args.short else 40)
    repeats = args.repeats or (2 if args.short else 5)
    max_epochs = args.max_epochs or (3 if args.short else None)
    _common.quiet()
    start = time.perf_counter()
    raw = simulate(prs, repeats, args.first_pr, max_epochs)
    _common.OUT_DIR.mkdir(exist_ok=True)
    (_common.OUT_DIR / "gate_reliability.json").write_text(json.dumps(raw, indent=1))
    text, rates = summarize(raw)
    print(text)
    print(f"wall time {time.perf_counter() - start:.0f} s")
    print(_common.ratio_line(rates[NEW]["b width / 3"]))


if __name__ == "__main__":
    main()
