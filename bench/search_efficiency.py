"""Search efficiency: the re-trained quality of the config each search strategy returns, at equal
total training samples.

Tasks (fixed specs, see ``TASKS``): the built-in ``digits-mlp`` with 40 % label noise on the
train/validation labels (the test split stays clean), 30 epochs (regularization-sensitive, flat
optimum); ``synthetic-mlp`` with 20 % label noise, 60 epochs; ``synthetic-wide``: 8,000 rows,
5 % label noise, 40 epochs and a wider space (``WIDE_SPACE``), the narrow task (the flatness
probe, ``bench/probes/flatness.py``, finds a small share of it within noise of the best). Arms,
all calling ``trainers.run_trial`` in this process on the same ``ObjectiveSpec`` (so only the
search strategy differs):

(a) random search without pruning (``RandomSampler``, ``NopPruner``), ``n_trials`` trials;
(b) a hand-written Optuna script: ``TPESampler(seed)`` + ``MedianPruner()`` with their defaults;
(c) regtune's default: the sampler and pruner ``service.worker.optimization`` builds from a
    ``StudySpec`` that leaves ``sampler`` and ``pruner`` at their defaults;
(d) regtune with confirmation (``Confirmer``): the product's ``confirm: {top_k, repeats}``
    (default 3 x 2): (c)'s search on the share of the budget that leaves room for the
    confirmation runs, then its top_k configs re-trained ``repeats`` times with the product's
    seeds (``service.studies.extras.confirm_seed``) and the best mean chosen with the product's
    ``service.studies.confirmation.rank_by_mean``; confirmation runs count as compute.
(d@50%) the same within half of (a)'s samples;
(d') other confirm settings from the same search (``--also-confirm KxR``; ``KxRrace``: with
    ``confirm.race``, compared with the plain ``KxR`` when both are given).

Compute is measured in training samples processed = epochs run x training rows, pruned trials
included (``epochs_run`` user attribute, set by ``run_trial`` also for pruned trials). (b), (c)
and (d) get the samples (a) used on the same seed. The arms of one seed run back to back.

Scoring: every arm's returned config (a: its best after ``n_trials``; b, c: the best COMPLETE
trial within (a)'s samples; d: the confirmed pick) is re-trained with ``--score-seeds`` training
seeds (default 5; 1001.., the same for every arm, none of them a search or confirmation seed)
and scored by its mean best val_loss (``Retrainer``): one run's score is partly luck. Reported
per task: the median over seeds of the re-trained val_loss and clean-test accuracy, the samples
used, and paired counts (better / worse / equal: the same score, in practice the same config)
of (d) against (a), (b), (c), of (c) against (a) and of (d@50%) against (a). The single-run
anytime table and curves (``bench/out/search_efficiency_<task>.png``) are printed too.

Targets: (d)'s re-trained pick is better than both (a)'s and (b)'s on the majority of
task-seeds, and (d@50%) is no worse than (a) at 100 % on at least half of them. Headline
(``ratio:``): the share of task-seeds where (d)'s re-trained pick is strictly better than both
(a)'s and (b)'s (target > 0.5).

    python bench/search_efficiency.py            # all tasks, 10 seeds, 30 trials for (a)
    python bench/search_efficiency.py --first-seed 5 --seeds 5   # seeds 5-9 (split a run)
    python bench/search_efficiency.py --short    # digits only, 3 seeds, 20 trials, 20 epochs
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import _common
import optuna

from service.spec import StudySpec
from service.studies.confirmation import ConfigRuns, rank_by_mean, run_stats
from service.studies.extras import SearchRun, plan_extras
from service.worker.optimization import build_pruner, build_sampler
from trainers import ObjectiveSpec, TrialDiverged, get_trainer, run_trial
from trainers.space import SearchSpace

T = TypeVar("T")
D = TypeVar("D")

SEARCH_SPACE: dict[str, Any] = {
    "weight_decay": {"low": 1.0e-6, "high": 1.0e-1, "log": True},
    "l1": {"fixed": 0.0},
    "dropout": {"low": 0.0, "high": 0.7},
    "label_smoothing": {"low": 0.0, "high": 0.3},
    "batch_size": {"choices": [32, 64, 128, 256]},
    "patience": {"low": 2, "high": 10},
}

# A wider space for the narrow task: weight decay up to 1, dropout up to 0.9 and label smoothing
# up to 0.5 include strongly over-regularized configurations, so only part of the space is near
# the optimum and a search strategy can be told apart from random search.
WIDE_SPACE: dict[str, Any] = {
    **SEARCH_SPACE,
    "weight_decay": {"low": 1.0e-6, "high": 1.0, "log": True},
    "dropout": {"low": 0.0, "high": 0.9},
    "label_smoothing": {"low": 0.0, "high": 0.5},
}

TASKS: dict[str, dict[str, Any]] = {
    "digits-noisy": {
        "trainer": "digits-mlp",
        "trainer_config": {"max_epochs": 30, "hidden_sizes": [128, 128], "label_noise": 0.4},
    },
    "synthetic": {
        "trainer": "synthetic-mlp",
        "trainer_config": {
            # 60, not 30: at 30 epochs 36 % of random configurations had their best epoch at the
            # last one (still improving: the task measured convergence speed as much as
            # regularization); at 60, 6 % (docs/benchmarks-history.md, "Synthetic task: 60 epochs")
            "max_epochs": 60,
            "hidden_sizes": [128, 128],
            "n_samples": 6000,
            "n_features": 40,
            "n_informative": 12,
            "n_classes": 5,
            "class_sep": 0.8,
            "label_noise": 0.2,
        },
    },
    # The narrow task: more rows, less label noise (smaller training noise) and the wide space
    "synthetic-wide": {
        "trainer": "synthetic-mlp",
        "search_space": WIDE_SPACE,
        "trainer_config": {
            "max_epochs": 40,
            "hidden_sizes": [128, 128],
            "n_samples": 8000,
            "n_features": 40,
            "n_informative": 12,
            "n_classes": 5,
            "class_sep": 0.8,
            "label_noise": 0.05,
        },
    },
}

FRACTIONS = (0.25, 0.5, 1.0)
# Every pick is re-trained with these many training seeds (1001..) and scored by the mean
SCORE_SEEDS = 5
# Arm (d): the product's `confirm: {top_k, repeats}`
CONFIRM = (3, 2)


def study_spec(
    task: str, max_epochs: int | None = None, config_overrides: dict[str, Any] | None = None
) -> StudySpec:
    """The fixed spec of `task` (trainer config overridden as given); sampler and pruner left
    at regtune's defaults."""
    data = dict(TASKS[task])
    config = {**data["trainer_config"], **(config_overrides or {})}
    if max_epochs is not None:
        config["max_epochs"] = max_epochs
    return StudySpec.model_validate(
        {
            "name": f"bench-{task}",
            "trainer": data["trainer"],
            "trainer_config": config,
            "search_space": data.get("search_space", SEARCH_SPACE),
            "objective": {"metric": "val_loss", "direction": "minimize"},
        }
    )


def objective_spec(spec: StudySpec) -> ObjectiveSpec:
    """What every arm trains: one torch thread so the arms see the same CPU."""
    return dataclasses.replace(spec.objective_spec(), torch_threads=1)


def train_rows(spec: StudySpec) -> int:
    """Rows in the training split of the spec's trainer (what one epoch processes)."""
    definition = get_trainer(spec.trainer)
    config = definition.validate_config(spec.trainer_config)
    params = spec.search_space.sample(optuna.trial.FixedTrial(_any_point(spec)))
    _, datamodule = definition.build(params, config)
    return len(datamodule.splits.x_train)


def _any_point(spec: StudySpec) -> dict[str, Any]:
    point: dict[str, Any] = {}
    for name, dist in spec.search_space.distributions().items():
        if isinstance(dist, optuna.distributions.CategoricalDistribution):
            point[name] = dist.choices[0]
        else:
            point[name] = dist.low  # type: ignore[attr-defined]
    return point


def _last_within(entries: list[tuple[int, T]], samples: float, default: D) -> T | D:
    """The item of the last `(samples spent, item)` entry spent within `samples`."""
    last: T | D = default
    for spent, item in entries:
        if spent > samples:
            break
        last = item
    return last


@dataclass
class ArmRun:
    """One arm on one seed: the anytime curve and the chosen config's test accuracy."""

    # (samples processed so far, best COMPLETE value so far) after each finished trial
    curve: list[tuple[int, float]] = field(default_factory=list)
    samples: int = 0
    wall_s: float = 0.0
    n_trials: int = 0
    n_pruned: int = 0
    test_acc: float = math.nan
    best_params: dict[str, Any] = field(default_factory=dict)
    # (samples processed so far, params) each time a COMPLETE trial became the best
    incumbents: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    # the in-memory study itself, trials in the order they finished (for probes)
    study: optuna.Study | None = None

    def best_at(self, samples: float) -> float:
        """Best value among the trials finished within `samples` (inf if none)."""
        return _last_within(self.curve, samples, math.inf)

    def incumbent_at(self, samples: float) -> dict[str, Any] | None:
        """The config this arm would have returned after `samples` (None before a success)."""
        return _last_within(self.incumbents, samples, None)

    def trials_within(self, samples: float) -> int:
        """Trials (pruned included) finished within `samples`."""
        return sum(1 for spent, _ in self.curve if spent <= samples)

    def samples_to_reach(self, target: float) -> float:
        """Samples spent when the best value first reached `target` (inf if never)."""
        for spent, value in self.curve:
            if value <= target:
                return float(spent)
        return math.inf


class Retrainer:
    """A config's quality without the luck of one training run: the mean over training seeds.

    A search picks the config whose one training run scored best, and on a noisy task that
    score is partly luck (the winner's curse: re-trained, the chosen config usually scores
    worse). Each config is re-trained with ``n`` other ``train_seed`` values (same data split,
    same seeds for every arm) and scored by the mean best val_loss; results are cached by config.
    ``epochs_trained`` counts the epochs its trainings ran (cached configs cost nothing).
    """

    SEED_BASE = 1000

    def __init__(self, spec: StudySpec, n: int, seed_base: int = SEED_BASE) -> None:
        self.n = n
        self.epochs_trained = 0
        self._targets = [
            dataclasses.replace(
                objective_spec(spec),
                trainer_config={**spec.trainer_config, "train_seed": seed_base + k},
            )
            for k in range(1, n + 1)
        ]
        self._cache: dict[tuple[tuple[str, Any], ...], tuple[list[float], list[float]]] = {}

    def runs(self, params: dict[str, Any]) -> list[float]:
        """The best val_loss of each re-training (inf for one that diverged)."""
        return self._train(params)[0]

    def __call__(self, params: dict[str, Any] | None) -> tuple[float, float]:
        """(mean best val_loss, mean clean-test accuracy); (inf, nan) for no config."""
        if params is None:
            return math.inf, math.nan
        values, accs = self._train(params)
        acc = sum(accs) / len(accs) if accs else math.nan
        return sum(values) / len(values), acc

    def _train(self, params: dict[str, Any]) -> tuple[list[float], list[float]]:
        key = tuple(sorted(params.items()))
        if key not in self._cache:
            values, accs = [], []
            for target in self._targets:
                try:
                    outcome = run_trial(optuna.trial.FixedTrial(dict(params)), target)
                except TrialDiverged:
                    values.append(math.inf)
                    continue
                values.append(outcome.value)
                accs.append((outcome.test_metrics or {}).get("test_acc", math.nan))
                self.epochs_trained += outcome.epochs_run
            self._cache[key] = (values, accs)
        return self._cache[key]


def run_arm(
    spec: StudySpec,
    sampler: optuna.samplers.BaseSampler,
    pruner: optuna.pruners.BasePruner,
    rows: int,
    *,
    n_trials: int,
    sample_budget: float = math.inf,
) -> ArmRun:
    """Optimize in memory until `n_trials` trials or `sample_budget` samples are spent."""
    target = objective_spec(spec)
    # A fixed name: Hyperband assigns brackets by hashing the study name with the trial number,
    # and an in-memory study's default name is random (the run would not be reproducible).
    study = optuna.create_study(
        study_name=spec.name, direction="minimize", sampler=sampler, pruner=pruner
    )
    run = ArmRun(study=study)
    best = math.inf

    def objective(trial: optuna.Trial) -> float:
        return run_trial(trial, target).value

    def account(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        nonlocal best
        run.samples += int(trial.user_attrs.get("epochs_run", 0)) * rows
        run.n_trials += 1
        if trial.state == optuna.trial.TrialState.PRUNED:
            run.n_pruned += 1
        value = trial.value if trial.state == optuna.trial.TrialState.COMPLETE else None
        if value is not None and value < best:
            best = value
            run.test_acc = float(trial.user_attrs.get("test_metrics", {}).get("test_acc", 0))
            run.best_params = dict(trial.params)
            run.incumbents.append((run.samples, run.best_params))
        run.curve.append((run.samples, best))
        if run.samples >= sample_budget:
            study.stop()

    start = time.perf_counter()
    study.optimize(objective, n_trials=n_trials, callbacks=[account], catch=(RuntimeError,))
    run.wall_s = time.perf_counter() - start
    return run


Arm = Callable[[StudySpec, int, int, int, float], ArmRun]


# (a) draws from its own seed stream: with a shared seed TPE's random start-up would replay
# (a)'s first trials exactly, and (a)'s best, when found early, would be "reached" for free.
# (b), (c) and the candidates share one stream (paired comparison: the same TPE start-up
# trials), so their differences come from the strategy, not from a luckier seed.
ARM_SEED_OFFSET = {"a": 10_000, "b": 20_000, "c": 20_000}


def random_arm(spec: StudySpec, seed: int, rows: int, n_trials: int, budget: float) -> ArmRun:
    """(a) random search, no pruning."""
    sampler = optuna.samplers.RandomSampler(seed=ARM_SEED_OFFSET["a"] + seed)
    return run_arm(spec, sampler, optuna.pruners.NopPruner(), rows, n_trials=n_trials)


def handwritten_arm(spec: StudySpec, seed: int, rows: int, n_trials: int, budget: float) -> ArmRun:
    """(b) what users write today: TPE + MedianPruner with Optuna's defaults."""
    sampler = optuna.samplers.TPESampler(seed=ARM_SEED_OFFSET["b"] + seed)
    pruner = optuna.pruners.MedianPruner()
    return run_arm(spec, sampler, pruner, rows, n_trials=n_trials, sample_budget=budget)


def regtune_arm(spec: StudySpec, seed: int, rows: int, n_trials: int, budget: float) -> ArmRun:
    """(c) regtune's default sampler and pruner, built from the spec as a worker builds them."""
    sampler = build_sampler(spec.sampler, spec, ARM_SEED_OFFSET["c"] + seed)
    pruner = build_pruner(spec.pruner, spec)
    return run_arm(spec, sampler, pruner, rows, n_trials=n_trials, sample_budget=budget)


ARMS: dict[str, Arm] = {
    "a random": random_arm,
    "b tpe+median": handwritten_arm,
    "c regtune": regtune_arm,
}


def candidate_arm(label: str, override: dict[str, Any]) -> tuple[str, Arm]:
    """An extra arm: regtune's arm with the spec's ``sampler``/``pruner`` replaced by `override`.

    How a default change is tried before it is made (``--candidate``).
    """

    def arm(spec: StudySpec, seed: int, rows: int, n_trials: int, budget: float) -> ArmRun:
        changed = StudySpec.model_validate({**spec.model_dump(mode="json"), **override})
        return regtune_arm(changed, seed, rows, n_trials, budget)

    return f"c' {label}", arm


def run_task(
    task: str,
    seeds: int,
    n_trials: int,
    max_epochs: int | None,
    arms: dict[str, Arm] | None = None,
    first_seed: int = 0,
    score: Callable[[dict[str, ArmRun]], SeedScores] | None = None,
) -> tuple[dict[str, list[ArmRun]], list[SeedScores]]:
    """Every arm on every seed; arms other than (a) capped at (a)'s samples of that seed. With
    `score`, each seed's runs are scored (re-trained picks) as soon as they end."""
    arms = arms or ARMS
    spec = study_spec(task, max_epochs)
    rows = train_rows(spec)
    runs: dict[str, list[ArmRun]] = {name: [] for name in arms}
    scores: list[SeedScores] = []
    for seed in range(first_seed, first_seed + seeds):
        baseline = random_arm(spec, seed, rows, n_trials, math.inf)
        runs["a random"].append(baseline)
        for name, arm in arms.items():
            if name == "a random":
                continue
            # A cap on trials too, so a pruner that prunes everything still ends.
            runs[name].append(arm(spec, seed, rows, 8 * n_trials, baseline.samples))
        line = ", ".join(
            f"{n} best {r[-1].best_at(baseline.samples):.4f} "
            f"({r[-1].n_trials} trials, {r[-1].n_pruned} pruned, {r[-1].wall_s:.0f}s)"
            for n, r in runs.items()
        )
        print(f"[{task} seed {seed}] {line}", flush=True)
        if score is not None:
            scores.append(score({name: r[-1] for name, r in runs.items()}))
            line = ", ".join(
                f"{n} {v:.4f} ({scores[-1].shares[n]:.2f})" for n, v in scores[-1].values.items()
            )
            print(f"[{task} seed {seed} re-trained (samples/(a))] {line}", flush=True)
            print(f"{SEED_LINE}{scores[-1].to_json(task, seed)}", flush=True)
    return runs, scores


def summarize(task: str, runs: dict[str, list[ArmRun]]) -> tuple[str, dict[str, list[float]]]:
    """The task's table and every arm's per-seed reach fractions."""
    baselines = runs["a random"]
    rows_out = []
    reach: dict[str, list[float]] = {}
    for name, arm_runs in runs.items():
        fractions = []
        for base, run in zip(baselines, arm_runs, strict=True):
            target = base.best_at(math.inf)
            fractions.append(run.samples_to_reach(target) / base.samples)
        reach[name] = fractions
        row: list[Any] = [name]
        for f in FRACTIONS:
            row.append(
                _common.median(
                    [r.best_at(f * b.samples) for b, r in zip(baselines, arm_runs, strict=True)]
                )
            )
        row += [
            _common.median([r.test_acc for r in arm_runs]),
            _common.median(fractions),
            _common.median(
                [
                    float(r.trials_within(FRACTIONS[0] * b.samples))
                    for b, r in zip(baselines, arm_runs, strict=True)
                ]
            ),
            _common.median([float(r.n_trials) for r in arm_runs]),
            _common.median([r.wall_s for r in arm_runs]),
        ]
        rows_out.append(row)
    headers = [
        "arm",
        *(f"best val_loss @{int(f * 100)}%" for f in FRACTIONS),
        "test acc (chosen)",
        "samples to reach (a) best / (a)",
        f"trials @{int(FRACTIONS[0] * 100)}%",
        "trials",
        "wall s",
    ]
    base_samples = _common.median([float(b.samples) for b in baselines])
    text = (
        f"## {task}: median over {len(baselines)} seeds; (a) used a median of "
        f"{base_samples:.0f} training samples\n" + _common.table(headers, rows_out)
    )
    return text, reach


def finished_within(run: ArmRun, budget: float) -> list[optuna.trial.FrozenTrial]:
    """The COMPLETE trials among those `run` finished within `budget` samples (finish order)."""
    assert run.study is not None
    finished = run.study.trials[: run.trials_within(budget)]
    return [t for t in finished if t.state == optuna.trial.TrialState.COMPLETE]


def _top(trials: list[optuna.trial.FrozenTrial], k: int) -> list[optuna.trial.FrozenTrial]:
    """The `k` best COMPLETE trials, best first (ties: lower number), as the product ranks."""
    return sorted(
        trials, key=lambda t: (float(t.value if t.value is not None else math.inf), t.number)
    )[:k]


@dataclass
class Confirmed:
    """What regtune with confirmation returns within a sample budget."""

    params: dict[str, Any] | None
    samples: int  # the search prefix's samples + the confirmation runs'
    search_trials: int  # trials of (c)'s search it kept (pruned included)
    changed: bool  # the pick differs from the single-run best of that search


class Confirmer:
    """The product's confirmation (``confirm: {top_k, repeats}``) applied to (c)'s search.

    After a search, the product re-trains its ``top_k`` best COMPLETE trials ``repeats`` times
    each, repeat ``j`` of a trial trained with ``service.studies.extras.confirm_seed(s, j)``
    (``s``: the trial's recorded ``train_seed``), and returns the config with the best mean over
    all its runs (``service.studies.confirmation.rank_by_mean``). Here the search is a prefix of
    (c)'s run (TPE and the pruner only look back, so the first ``n`` trials of a run are what a
    study with ``n_trials = n`` would have run): the longest prefix whose samples plus the
    confirmation's estimated samples (``repeats`` x its top trials' epochs x rows) fit the
    budget. The confirmation's actual samples are counted. Runs are cached by (config, seed).
    The runs come from the product's plan (``service.studies.extras.plan_extras``); with
    ``race`` (``confirm.race``) it is asked again after each round, so a configuration the race
    drops is not re-trained and its runs cost nothing (the reservation stays the full
    ``top_k x repeats``: the product cannot know the race's savings in advance either).
    """

    def __init__(
        self,
        spec: StudySpec,
        rows: int,
        top_k: int,
        repeats: int,
        cache: dict[tuple[tuple[tuple[str, Any], ...], int], tuple[float, int]] | None = None,
        race: bool = False,
    ) -> None:
        self.spec, self.rows, self.top_k, self.repeats = spec, rows, top_k, repeats
        self.race = race
        # shared between confirm settings of one task: the same (config, seed) trains once
        self._cache = {} if cache is None else cache

    def sharing(self, top_k: int, repeats: int, race: bool = False) -> Confirmer:
        """Another confirm setting on the same task that reuses this one's trained runs."""
        return Confirmer(self.spec, self.rows, top_k, repeats, self._cache, race)

    def _train(self, params: dict[str, Any], seed: int) -> tuple[float, int]:
        """(best val_loss or inf if it diverged, epochs run) of `params` with `seed`."""
        key = (tuple(sorted(params.items())), seed)
        if key not in self._cache:
            target = dataclasses.replace(
                objective_spec(self.spec),
                trainer_config={**self.spec.trainer_config, "train_seed": seed},
            )
            trial = optuna.trial.FixedTrial(dict(params))
            try:
                outcome = run_trial(trial, target)
                self._cache[key] = (outcome.value, outcome.epochs_run)
            except TrialDiverged:
                self._cache[key] = (math.inf, int(trial.user_attrs.get("epochs_run", 0)))
        return self._cache[key]

    def _estimate(self, trials: list[optuna.trial.FrozenTrial]) -> int:
        top = _top(trials, self.top_k)
        return self.repeats * self.rows * sum(int(t.user_attrs.get("epochs_run", 0)) for t in top)

    def __call__(self, run: ArmRun, budget: float) -> Confirmed:
        """Regtune with confirmation within `budget` samples, from (c)'s `run`."""
        assert run.study is not None
        n = run.trials_within(budget)
        while (
            n > 0
            and run.curve[n - 1][0] + self._estimate(finished_within(run, run.curve[n - 1][0]))
            > budget
        ):
            n -= 1
        if n == 0:
            return Confirmed(None, 0, 0, False)
        spent = run.curve[n - 1][0]
        top = _top(finished_within(run, spent), self.top_k)
        if not top:
            return Confirmed(None, spent, n, False)
        by_number = {t.number: t for t in top}
        searched = [
            SearchRun(
                number=t.number,
                value=float(t.value if t.value is not None else math.inf),
                params=t.params,
                train_seed=int(t.user_attrs["train_seed"]),
            )
            for t in top
        ]
        # the product's plan (service.studies.extras.plan_extras): with racing, each round is
        # decided by the finished ones before it, so the plan is asked again after every round
        plan_spec = {
            "reference": False,
            "confirm": {"top_k": self.top_k, "repeats": self.repeats, "race": self.race},
        }
        confirmed: dict[int, list[float]] = {}
        trained = 0
        while True:
            plan = plan_extras(plan_spec, searched, SearchSpace(), confirmed)
            if trained == len(plan.runs):
                break
            for extra in plan.runs[trained:]:
                assert extra.repeat_of is not None and extra.train_seed is not None
                params = dict(by_number[extra.repeat_of].params)
                value, epochs = self._train(params, extra.train_seed)
                confirmed.setdefault(extra.repeat_of, []).append(value)
                spent += epochs * self.rows
                trained += 1
        configs = [
            ConfigRuns(trial_number=r.number, values=[r.value, *confirmed.get(r.number, [])])
            for r in searched
        ]
        ranked = rank_by_mean(configs, maximize=False)
        pick = by_number[ranked[0].trial_number] if ranked else top[0]
        return Confirmed(dict(pick.params), spent, n, pick.number != top[0].number)


@dataclass
class SeedScores:
    """One task-seed: each arm's pick scored by its mean over the scoring seeds."""

    values: dict[str, float]  # mean best val_loss of the re-trained pick
    accs: dict[str, float]  # mean clean-test accuracy of the re-trained pick
    shares: dict[str, float]  # samples the arm used / (a)'s samples
    changed: dict[str, bool]  # confirmation changed the pick
    # search trials each arm ran within (a)'s samples, and how many of them were pruned
    trials: dict[str, int] = field(default_factory=dict)
    pruned: dict[str, int] = field(default_factory=dict)

    def to_json(self, task: str, seed: int) -> str:
        """One line that ``--merge`` reads back (split runs are summarized together)."""
        return json.dumps({"task": task, "seed": seed, **dataclasses.asdict(self)})

    @classmethod
    def from_json(cls, text: str) -> tuple[str, int, SeedScores]:
        data = json.loads(text)
        task, seed = data.pop("task"), data.pop("seed")
        return task, int(seed), cls(**data)


CONFIRM_ARM = "d regtune+confirm"
# the prefix of the one-line JSON record printed per scored task-seed (read back by --merge)
SEED_LINE = "seed-scores: "
HALF_ARM = "d@50% regtune+confirm"


def confirm_arm_name(top_k: int, repeats: int, race: bool = False) -> str:
    """The arm of another confirm setting (``--also-confirm``)."""
    return f"d' confirm {top_k}x{repeats}" + (" race" if race else "")


def score_seed(
    runs: dict[str, ArmRun],
    scorer: Retrainer,
    confirmer: Confirmer,
    also: dict[str, Confirmer] | None = None,
) -> SeedScores:
    """Every arm's returned config at (a)'s samples, (d) also at half of them, and each `also`
    confirm setting at (a)'s samples (from the same search of (c)), re-trained."""
    base = runs["a random"]
    budget = float(base.samples)
    picks: dict[str, dict[str, Any] | None] = {}
    shares: dict[str, float] = {}
    trials: dict[str, int] = {}
    pruned: dict[str, int] = {}
    for name, run in runs.items():
        picks[name] = run.incumbent_at(budget)
        shares[name] = min(run.samples, budget) / budget if budget else math.nan
        assert run.study is not None
        within = run.study.trials[: run.trials_within(budget)]
        trials[name] = len(within)
        pruned[name] = sum(1 for t in within if t.state == optuna.trial.TrialState.PRUNED)
    changed = {}
    settings = [(CONFIRM_ARM, confirmer, 1.0), (HALF_ARM, confirmer, 0.5)]
    settings += [(name, other, 1.0) for name, other in (also or {}).items()]
    for name, chosen, fraction in settings:
        confirmed = chosen(runs["c regtune"], fraction * budget)
        picks[name] = confirmed.params
        shares[name] = confirmed.samples / budget if budget else math.nan
        changed[name] = confirmed.changed
    values, accs = {}, {}
    for name, params in picks.items():
        values[name], accs[name] = scorer(params)
    return SeedScores(values, accs, shares, changed, trials, pruned)


def paired(scores: list[SeedScores], arm: str, other: str) -> tuple[int, int, int]:
    """(better, worse, equal) task-seeds of `arm` against `other` (lower re-trained val_loss is
    better; equal: the same score, in practice the same config)."""
    better = sum(1 for s in scores if s.values[arm] < s.values[other])
    worse = sum(1 for s in scores if s.values[arm] > s.values[other])
    return better, worse, len(scores) - better - worse


def mean_difference(scores: list[SeedScores], arm: str, other: str) -> tuple[float, float, float]:
    """`arm`'s re-trained val_loss minus `other`'s, paired by task-seed: (mean, low, high) with a
    95 % Student-t interval over the task-seeds where both are finite (negative: `arm` better).
    NaN when fewer than two such task-seeds."""
    # the product's own summary of repeated runs (a diverged side makes the difference non-finite)
    summary = run_stats([s.values[arm] - s.values[other] for s in scores])
    if summary is None or summary.ci95_low is None or summary.ci95_high is None:
        return math.nan, math.nan, math.nan
    return summary.mean, summary.ci95_low, summary.ci95_high


def beats_both(score: SeedScores, arm: str = CONFIRM_ARM) -> bool:
    """The headline event: (d)'s (or `arm`'s) re-trained pick is better than (a)'s and (b)'s."""
    d = score.values[arm]
    return d < score.values["a random"] and d < score.values["b tpe+median"]


def summarize_scores(task: str, scores: list[SeedScores], n_seeds: int) -> str:
    """The task's re-trained table and paired comparisons."""
    names = list(scores[0].values)
    rows_out = [
        [
            name,
            _common.median([s.values[name] for s in scores]),
            _common.percentile([s.values[name] for s in scores], 90),
            _common.median([s.accs[name] for s in scores]),
            _common.median([s.shares[name] for s in scores]),
            _common.median([float(s.trials[name]) for s in scores if name in s.trials]),
            _common.median([float(s.pruned[name]) for s in scores if name in s.pruned]),
        ]
        for name in names
    ]
    headers = [
        "arm",
        "re-trained val_loss",
        "worst decile",
        "re-trained test acc",
        "samples / (a)'s",
        "trials",
        "pruned",
    ]
    lines = [
        f"## {task}: picks re-trained with {n_seeds} training seeds (mean), median and 90th "
        f"percentile over {len(scores)} seeds",
        _common.table(headers, rows_out),
    ]
    pairs = [
        (CONFIRM_ARM, "a random"),
        (CONFIRM_ARM, "b tpe+median"),
        (CONFIRM_ARM, "c regtune"),
        ("c regtune", "a random"),
        (HALF_ARM, "a random"),
    ]
    # other confirm settings against the baselines, candidates against regtune's default
    for name in names:
        if name.startswith("d' "):
            pairs += [(name, "a random"), (name, "b tpe+median"), (name, "c regtune")]
            plain = name.removesuffix(" race")
            if plain != name and plain in names:  # racing against re-training every config
                pairs.append((name, plain))
        elif name.startswith("c' "):
            pairs.append((name, "c regtune"))
    for arm, other in pairs:
        better, worse, equal = paired(scores, arm, other)
        mean, low, high = mean_difference(scores, arm, other)
        lines.append(
            f"{task}: {arm} vs {other}: better {better}, worse {worse}, equal {equal}; "
            f"mean difference {mean:+.4f} (95 % interval {low:+.4f} to {high:+.4f})"
        )
    changed = sum(1 for s in scores if s.changed[CONFIRM_ARM])
    lines.append(
        f"{task}: confirmation changed the pick on {changed}/{len(scores)} seeds; "
        + "; ".join(
            f"{arm} beats both (a) and (b) on "
            f"{sum(1 for s in scores if beats_both(s, arm))}/{len(scores)}"
            for arm in names
            if arm == CONFIRM_ARM or arm.startswith("d' ")
        )
    )
    return "\n".join(lines)


def final_bests(runs: dict[str, list[ArmRun]], arm: str) -> list[float]:
    """Per seed: `arm`'s best value within (a)'s samples."""
    return [r.best_at(b.samples) for b, r in zip(runs["a random"], runs[arm], strict=True)]


def plot(task: str, runs: dict[str, list[ArmRun]]) -> str | None:
    """Median anytime curves against the fraction of (a)'s samples; the PNG's path."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    baselines = runs["a random"]
    grid = [i / 50 for i in range(1, 51)]
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, arm_runs in runs.items():
        ys = [
            _common.median(
                [r.best_at(x * b.samples) for b, r in zip(baselines, arm_runs, strict=True)]
            )
            for x in grid
        ]
        ax.plot(grid, [y if math.isfinite(y) else math.nan for y in ys], label=name)
    ax.set_xlabel("training samples / (a)'s total")
    ax.set_ylabel("best val_loss (median over seeds)")
    ax.set_title(f"search efficiency: {task}")
    ax.legend()
    _common.OUT_DIR.mkdir(parents=True, exist_ok=True)
    path = _common.OUT_DIR / f"search_efficiency_{task}.png"
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return str(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", action="store_true", help="digits only, 3 seeds, 20 trials")
    parser.add_argument("--seeds", type=int, default=None)
    parser.add_argument(
        "--first-seed",
        type=int,
        default=0,
        help="run seeds first..first+seeds-1 (split a long run over processes)",
    )
    parser.add_argument("--trials", type=int, default=None, help="trials of arm (a)")
    parser.add_argument("--tasks", nargs="*", choices=sorted(TASKS), default=None)
    parser.add_argument("--max-epochs", type=int, default=None)
    parser.add_argument(
        "--score-seeds",
        type=int,
        default=SCORE_SEEDS,
        metavar="N",
        help=f"training seeds each pick is re-trained with (default {SCORE_SEEDS})",
    )
    parser.add_argument(
        "--confirm",
        type=int,
        nargs=2,
        default=list(CONFIRM),
        metavar=("TOP_K", "REPEATS"),
        help=f"arm (d)'s confirm settings (default {CONFIRM[0]} {CONFIRM[1]})",
    )
    parser.add_argument(
        "--also-confirm",
        action="append",
        default=[],
        metavar="KxR[race]",
        help="another confirm setting, from the same search as (d), e.g. 2x1, or 3x4race for "
        "confirm.race (repeatable)",
    )
    parser.add_argument(
        "--merge",
        nargs="+",
        default=None,
        metavar="LOG",
        help="summarize the per-seed records of earlier runs' output instead of running",
    )
    parser.add_argument(
        "--candidate",
        action="append",
        default=[],
        metavar="LABEL=JSON",
        help='extra arm, e.g. asha=\'{"pruner": {"name": "successive_halving"}}\'',
    )
    args = parser.parse_args()
    if args.score_seeds < 1 or min(args.confirm) < 1:
        parser.error("--score-seeds and --confirm take positive numbers")
    if args.merge:
        merge(args.merge, args.score_seeds)
        return
    also: list[tuple[int, int, bool]] = []
    for item in args.also_confirm:
        top_k, _, repeats = item.removesuffix("race").partition("x")
        if not (top_k.isdigit() and repeats.isdigit() and int(top_k) and int(repeats)):
            parser.error(
                f"--also-confirm: KxR with positive numbers, e.g. 2x1 or 3x4race; got {item!r}"
            )
        also.append((int(top_k), int(repeats), item.endswith("race")))
    arms = dict(ARMS)
    for item in args.candidate:
        label, _, text = item.partition("=")
        name, arm = candidate_arm(label, json.loads(text))
        arms[name] = arm
    seeds = args.seeds or (3 if args.short else 10)
    n_trials = args.trials or (20 if args.short else 30)
    tasks = args.tasks or (["digits-noisy"] if args.short else list(TASKS))
    max_epochs = args.max_epochs or (20 if args.short else None)
    _common.quiet()

    all_scores: list[SeedScores] = []
    for task in tasks:
        spec = study_spec(task, max_epochs)
        scorer = Retrainer(spec, args.score_seeds)
        confirmer = Confirmer(spec, train_rows(spec), *args.confirm)
        others = {confirm_arm_name(k, r, x): confirmer.sharing(k, r, x) for k, r, x in also}

        def score(
            seed_runs: dict[str, ArmRun],
            scorer: Retrainer = scorer,
            confirmer: Confirmer = confirmer,
            others: dict[str, Confirmer] = others,
        ) -> SeedScores:
            return score_seed(seed_runs, scorer, confirmer, others)

        runs, scores = run_task(task, seeds, n_trials, max_epochs, arms, args.first_seed, score)
        all_scores += scores
        text, _ = summarize(task, runs)
        print(text)
        path = plot(task, runs)
        if path:
            print(f"anytime curve (single runs): {path}")
        print(summarize_scores(task, scores, args.score_seeds))
    top_k, repeats = args.confirm
    print(
        f"tasks {', '.join(tasks)}; seeds {seeds}; (a) trials {n_trials}; "
        f"confirm top_k {top_k} x repeats {repeats}; picks scored over {args.score_seeds} "
        "training seeds"
    )
    print_headline(all_scores)


def print_headline(all_scores: list[SeedScores]) -> None:
    """The targets over every task-seed; the ``ratio:`` line last."""
    half_ok = sum(1 for s in all_scores if s.values[HALF_ARM] <= s.values["a random"])
    print(
        f"{HALF_ARM} no worse than (a) at 100 %: {half_ok}/{len(all_scores)} task-seeds "
        "(target: at least half)"
    )
    share = sum(1 for s in all_scores if beats_both(s)) / len(all_scores)
    print(_common.ratio_line(share))


def merge(paths: list[str], n_seeds: int) -> None:
    """Summarize the per-seed records (``seed-scores:`` lines) in the output of split runs.

    A task-seed recorded twice (a rerun) counts once, its last record kept."""
    by_task: dict[str, dict[int, SeedScores]] = {}
    for path in paths:
        with open(path, encoding="utf-8") as log:
            for line in log:
                if line.startswith(SEED_LINE):
                    task, seed, record = SeedScores.from_json(line.removeprefix(SEED_LINE))
                    by_task.setdefault(task, {})[seed] = record
    if not by_task:
        raise SystemExit(f"--merge: no '{SEED_LINE}' lines in {', '.join(paths)}")
    all_scores: list[SeedScores] = []
    for task, seeds in by_task.items():
        scores = [seeds[s] for s in sorted(seeds)]
        print(f"{task}: seeds {', '.join(str(s) for s in sorted(seeds))}")
        print(summarize_scores(task, scores, n_seeds))
        all_scores += scores
    print_headline(all_scores)


if __name__ == "__main__":
    main()
