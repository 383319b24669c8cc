"""The Optuna sampler and pruner a study spec names, built the same way at submit and in workers.

Optuna keeps neither the sampler nor the pruner in the database, so every worker trial rebuilds
them from the stored spec (`service.worker.optimization.open_study`). The API builds them once
too, without a study, when a spec is validated (`service.spec.StudySpec`): options Optuna
refuses, or resource-like options past `OPTION_LIMITS`, answer 422 at submit instead of failing
the study in a worker.

Pure functions: no database, no study.
"""

from __future__ import annotations

import inspect
import math
import re
import warnings
from typing import TYPE_CHECKING, Any

import optuna

from service.samplers import MAX_RANDOM_SHARE, RandomShareSampler

if TYPE_CHECKING:  # spec.py imports this module to validate a spec
    from service.spec import PrunerConfig, SamplerConfig, StudySpec

__all__ = [
    "DEFAULT_GAP_EPOCHS",
    "DEFAULT_RANDOM_SHARE",
    "MAX_GAP_EPOCHS",
    "OPTION_LIMITS",
    "SINGLE_OBJECTIVE_SAMPLERS",
    "SpecError",
    "auto_warmup_steps",
    "build_pruner",
    "build_sampler",
    "check_options",
]

# Upper bounds of the sampler/pruner options that size what a worker allocates or computes per
# trial (Optuna's defaults in brackets). An option not listed is bounded only by Optuna's own
# checks and the spec's free-form rules (finite numbers, depth, size).
OPTION_LIMITS: dict[str, int] = {
    "n_startup_trials": 100_000,  # tpe, cmaes, gp, median/percentile pruners [10, 1, 10, 5]
    "n_ei_candidates": 10_000,  # tpe [24]
    "popsize": 10_000,  # cmaes [4 + 3 ln(dims)]
    "inc_popsize": 16,  # cmaes restart growth factor [2]
    "population_size": 10_000,  # nsga2 [50]
    "n_preliminary_samples": 100_000,  # gp [2048]
    "n_local_search": 1_000,  # gp [10]
    "n_warmup_steps": 1_000_000,  # median/percentile pruners [0]
    "interval_steps": 1_000_000,  # median/percentile pruners [1]
    "n_min_trials": 100_000,  # median/percentile pruners [1]
    "min_resource": 1_000_000,  # successive halving, hyperband
    "max_resource": 1_000_000,  # hyperband
    "reduction_factor": 1_000,  # successive halving, hyperband [3]
    # successive halving: a rung's promotion needs reduction_factor ** (rate + rung) trials,
    # a power that takes minutes to compute for a rate of 10**7 [0]
    "min_early_stopping_rate": 100,
    "patience": 1_000_000,  # patient pruner
}


# Samplers that refuse a study with several objectives (Optuna's CmaEsSampler raises). TPE
# (MOTPE), NSGA-II, GP (log EHVI), random, QMC and grid serve several.
SINGLE_OBJECTIVE_SAMPLERS = frozenset({"cmaes"})


DEFAULT_GAP_EPOCHS = 3
"""The ``gap`` pruner's ``epochs`` (k) when the spec gives none; at most `MAX_GAP_EPOCHS`."""
MAX_GAP_EPOCHS = 1_000

DEFAULT_RANDOM_SHARE = 0.0
"""Share of a TPE study's trials proposed at random (option ``random_share``; see
`service.samplers.RandomShareSampler` and docs/benchmarks.md, "Sampler regret")."""


# The Optuna class behind each sampler and pruner name: `build_sampler` builds the plain ones
# from it, and its constructor's annotations say which options a JSON spec can give at all
# (`_check_types`).
_SAMPLER_CLASSES: dict[str, type] = {
    "tpe": optuna.samplers.TPESampler,
    "random": optuna.samplers.RandomSampler,
    "grid": optuna.samplers.GridSampler,
    "cmaes": optuna.samplers.CmaEsSampler,
    "gp": optuna.samplers.GPSampler,
    "qmc": optuna.samplers.QMCSampler,
    "nsga2": optuna.samplers.NSGAIISampler,
}
_PRUNER_CLASSES: dict[str, type] = {
    "auto": optuna.pruners.PercentilePruner,
    "gap": optuna.pruners.PercentilePruner,
    "median": optuna.pruners.MedianPruner,
    "percentile": optuna.pruners.PercentilePruner,
    "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
    "hyperband": optuna.pruners.HyperbandPruner,
    "patient": optuna.pruners.PatientPruner,
    "threshold": optuna.pruners.ThresholdPruner,
}


class SpecError(ValueError):
    """Sampler/pruner options Optuna refuses; the message starts with the field path."""


def build_sampler(
    config: SamplerConfig, spec: StudySpec, seed: int | None, *, full_grid: bool = True
) -> optuna.samplers.BaseSampler:
    """The spec's sampler with `seed`; its `options` are passed to the Optuna constructor.

    TPE takes one option of regtune's own, ``random_share`` (0 to `MAX_RANDOM_SHARE`, default
    `DEFAULT_RANDOM_SHARE`): that share of the trials, evenly spaced by trial number, is proposed
    at random (`service.samplers.RandomShareSampler`).

    `full_grid=False` builds a grid sampler over the first choice of each parameter only: the
    same constructor checks of the options, without enumerating up to `MAX_GRID_POINTS` points.

    Raises:
        SpecError: Optuna refused the options (TypeError or ValueError of the constructor;
            anything else propagates, and the worker fails the study with it).
    """
    options: dict[str, Any] = dict(config.options)
    share = _random_share(options) if config.name == "tpe" else 0.0
    try:
        match config.name:
            case "tpe":
                tpe = optuna.samplers.TPESampler(seed=seed, **options)
                return RandomShareSampler(tpe, share, seed) if share > 0 else tpe
            case "grid":
                grid = {
                    name: list(dist.choices)[: None if full_grid else 1]  # type: ignore[attr-defined]
                    for name, dist in spec.search_space.distributions().items()
                }
                return optuna.samplers.GridSampler(grid, seed=seed, **options)
            case name if name in _SAMPLER_CLASSES:  # random, cmaes, gp, qmc, nsga2
                sampler: optuna.samplers.BaseSampler = _SAMPLER_CLASSES[name](seed=seed, **options)
                return sampler
    except (TypeError, ValueError) as exc:
        raise SpecError(f"sampler.options: {_describe(exc)}") from None
    raise SpecError(f"sampler.name: unknown sampler {config.name!r}")


def _random_share(options: dict[str, Any]) -> float:
    """Pop TPE's ``random_share`` option (regtune's, not Optuna's) from `options`, checked."""
    value = options.pop("random_share", DEFAULT_RANDOM_SHARE)
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not 0 <= value <= MAX_RANDOM_SHARE
    ):
        raise SpecError(
            f"sampler.options.random_share: must be a number from 0 to {MAX_RANDOM_SHARE} "
            f"(the share of trials proposed at random), got {_short(value)}"
        )
    return float(value)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:40] + "..."


def auto_warmup_steps(spec: StudySpec) -> int:
    """Epochs the ``auto`` pruner lets every trial run before judging it.

    The shortest early-stopping patience the search space allows (its ``patience`` low bound,
    smallest choice or fixed value; regtune's default 5 when patience is not searched), at most
    a quarter of ``max_epochs``: a trial is not cut before it could have stopped itself, and
    strongly regularized settings, which learn more slowly in the first epochs, are not pruned
    for it.
    """
    patience = getattr(spec.search_space, "patience", None)
    choices = getattr(patience, "choices", None)
    low = min(choices) if choices else getattr(patience, "low", getattr(patience, "fixed", 5))
    max_epochs = spec.trainer_config.get("max_epochs")
    cap = max(1, max_epochs // 4) if isinstance(max_epochs, int) else int(low)
    return max(0, min(int(low), cap))


def build_pruner(config: PrunerConfig, spec: StudySpec) -> optuna.pruners.BasePruner:
    """The spec's pruner; Hyperband's max resource defaults to the trainer's max_epochs.

    A study with several objectives gets no pruner (`NopPruner`): Optuna does not prune them.

    Raises:
        SpecError: Optuna refused the options (TypeError or ValueError of the constructor;
            anything else propagates, and the worker fails the study with it).
    """
    options: dict[str, Any] = dict(config.options)
    max_epochs = spec.trainer_config.get("max_epochs")
    if spec.multi_objective:
        # Optuna cannot report or prune a trial of a multi-objective study; the spec refuses
        # any pruner but "auto" and "none" there, and both mean no pruning (docs/api.md)
        return optuna.pruners.NopPruner()
    if config.name == "gap":
        # the epochs rule runs in the trainers' epoch tracker (it sees the gap; an Optuna
        # pruner sees the objective only): here it is checked, and the rest is "auto"
        _gap_epochs(options.pop("epochs", DEFAULT_GAP_EPOCHS))
        action = options.pop("action", "prune")
        if action not in ("prune", "stop"):
            raise SpecError(
                f"pruner.options.action: must be prune or stop (what the gap rule does to the "
                f"trial), got {_short(action)}"
            )
        config = config.model_copy(update={"name": "auto", "options": options})
    try:
        match config.name:
            case "auto":
                # keep the best 75 % at each epoch: a median rule cut trials that would have ended
                # best on both benchmark tasks (docs/benchmarks.md, "Default pruner")
                options.setdefault("percentile", 75.0)
                options.setdefault("n_startup_trials", 5)
                options.setdefault("n_warmup_steps", auto_warmup_steps(spec))
                return optuna.pruners.PercentilePruner(**options)
            case "none":
                return optuna.pruners.NopPruner()
            case "median":
                return optuna.pruners.MedianPruner(**options)
            case "percentile":
                options.setdefault("percentile", 25.0)
                return optuna.pruners.PercentilePruner(**options)
            case "successive_halving":
                return optuna.pruners.SuccessiveHalvingPruner(**options)
            case "hyperband":
                options.setdefault("min_resource", 1)
                if isinstance(max_epochs, int) and max_epochs > 1:
                    options.setdefault("max_resource", max_epochs)
                return optuna.pruners.HyperbandPruner(**options)
            case "patient":
                options.setdefault("patience", 3)
                return optuna.pruners.PatientPruner(None, **options)
            case "threshold":
                return optuna.pruners.ThresholdPruner(**options)
    except (TypeError, ValueError) as exc:
        raise SpecError(f"pruner.options: {_describe(exc)}") from None
    raise SpecError(f"pruner.name: unknown pruner {config.name!r}")


def _gap_epochs(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_GAP_EPOCHS:
        raise SpecError(
            f"pruner.options.epochs: must be a whole number from 1 to {MAX_GAP_EPOCHS} (epochs "
            f"in a row the gap must widen while the objective stalls), got {_short(value)}"
        )
    return value


def check_options(spec: StudySpec) -> None:
    """Build the spec's sampler and pruner once (no study), as a worker will.

    Raises:
        SpecError: an option past `OPTION_LIMITS`, or one Optuna refuses.
    """
    for field, options in (("sampler", spec.sampler.options), ("pruner", spec.pruner.options)):
        for key, limit in OPTION_LIMITS.items():
            value = options.get(key)
            if isinstance(value, int | float) and not isinstance(value, bool) and value > limit:
                raise SpecError(f"{field}.options.{key}: {value!r} is more than the limit {limit}")
    _check_types(
        "sampler", _SAMPLER_CLASSES.get(spec.sampler.name), spec.sampler.options, {"random_share"}
    )
    _check_types(
        "pruner", _PRUNER_CLASSES.get(spec.pruner.name), spec.pruner.options, {"epochs", "action"}
    )
    with warnings.catch_warnings():
        # "experimental" warnings of some samplers are noise at submit; workers log them
        warnings.simplefilter("ignore")
        try:
            build_sampler(spec.sampler, spec, spec.sampler.seed, full_grid=False)
        except SpecError:
            raise
        except Exception as exc:  # hostile options may raise anything; submit must not
            raise SpecError(f"sampler.options: {_describe(exc)}") from None
        try:
            build_pruner(spec.pruner, spec)
        except SpecError:
            raise
        except Exception as exc:
            raise SpecError(f"pruner.options: {_describe(exc)}") from None


# type names a JSON value can be; an annotation naming anything else (Callable, BaseSampler,
# FrozenTrial, ...) takes a Python object, which Optuna stores unchecked and calls mid-study
_JSON_TYPES = {"bool", "int", "float", "str", "None", "dict", "list", "Any", "Mapping", "Sequence"}
_SCALARS: dict[str, tuple[type, ...]] = {
    "bool": (bool,),
    "int": (int,),
    "float": (int, float),
    "str": (str,),
    "None": (type(None),),
}


def _check_types(field: str, cls: type | None, options: dict[str, Any], own: set[str]) -> None:
    """Refuse an option the Optuna constructor types as a Python object (a function, a sampler)
    or as plain numbers/strings the value is not: Optuna's constructors store such values
    unchecked, so the study would fail in a worker at its first sample instead of at submit.
    `own`: regtune's own options, checked where they are read."""
    if cls is None:
        return
    parameters = inspect.signature(cls.__init__).parameters  # type: ignore[misc]
    for key, value in options.items():
        parameter = parameters.get(key)
        if key in own or parameter is None:
            continue  # an unknown name: the constructor's TypeError names it
        annotation = parameter.annotation
        text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
        names = set(re.findall(r"[A-Za-z_][A-Za-z_0-9.]*", text))
        if not names <= _JSON_TYPES:
            raise SpecError(
                f"{field}.options.{key}: takes a Python object ({text[:60]}), which a spec "
                "cannot give"
            )
        if names <= set(_SCALARS):
            allowed = tuple(t for name in names for t in _SCALARS[name])
            if not isinstance(value, allowed) or (isinstance(value, bool) and "bool" not in names):
                raise SpecError(f"{field}.options.{key}: must be {text}, got {_short(value)}")


def _describe(exc: Exception) -> str:
    # Optuna's messages are short; bound them anyway, they may quote a hostile value
    text = str(exc) or exc.__class__.__name__
    return text if len(text) <= 300 else text[:300] + "..."
