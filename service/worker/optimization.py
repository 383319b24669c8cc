"""Optuna pieces a worker rebuilds from the stored spec: storage, sampler, pruner, study.

Optuna keeps neither the sampler nor the pruner in the database, so every trial rebuilds them
from the study spec. Each trial gets its own sampler seed derived from the study seed and the
trial's claim id: two workers never replay the same random start-up suggestions, and a
one-worker study stays reproducible.
"""

from __future__ import annotations

import warnings
from typing import Any

import optuna
from optuna.storages import BaseStorage, RDBStorage, RetryHeartbeatStaleTrialCallback

from service.config import Settings
from service.db import (
    SQLITE_WORKER_PRAGMAS,
    engine_kwargs,
    install_sqlite_pragmas,
    normalize_url,
)
from service.spec import PrunerConfig, SamplerConfig, StudySpec
from service.worker.rdb import WorkerRDBStorage

__all__ = [
    "SpecError",
    "auto_warmup_steps",
    "build_pruner",
    "build_sampler",
    "open_storage",
    "open_study",
    "trial_seed",
]

_SEED_MODULUS = 2**31 - 1


class SpecError(ValueError):
    """A stored spec whose sampler/pruner options Optuna refuses (the study ends `failed`)."""


def quiet_optuna() -> None:
    """WARNING level: at INFO Optuna queries the best trial after every trial (and logs it)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def open_storage(url: str, settings: Settings) -> RDBStorage:
    """An RDBStorage with heartbeats; a stale trial is retried with the same parameters.

    The schema must exist already (`regtune db upgrade`): concurrent first-time creation races.
    """
    url = normalize_url(url)
    with warnings.catch_warnings():
        # heartbeats are "experimental" since Optuna 2.8; the warning is noise in every worker log
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return _rdb_storage(url, settings)


def _rdb_storage(url: str, settings: Settings) -> RDBStorage:
    storage = _new_rdb_storage(url, settings)
    install_sqlite_pragmas(storage.engine, SQLITE_WORKER_PRAGMAS)
    return storage


def _new_rdb_storage(url: str, settings: Settings) -> RDBStorage:
    return WorkerRDBStorage(
        url,
        engine_kwargs=engine_kwargs(url),
        skip_table_creation=True,
        heartbeat_interval=settings.heartbeat_interval,
        grace_period=settings.heartbeat_grace_period,
        heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(
            max_retry=settings.max_retries
        ),
    )


def trial_seed(study_seed: int | None, claim_id: int) -> int | None:
    """A distinct, reproducible seed per trial; None (entropy) when the study has no seed."""
    if study_seed is None:
        return None
    return (study_seed * 1_000_003 + claim_id) % _SEED_MODULUS


def build_sampler(
    config: SamplerConfig, spec: StudySpec, seed: int | None
) -> optuna.samplers.BaseSampler:
    """The spec's sampler with `seed`; its `options` are passed to the Optuna constructor."""
    options: dict[str, Any] = dict(config.options)
    try:
        match config.name:
            case "tpe":
                return optuna.samplers.TPESampler(seed=seed, **options)
            case "random":
                return optuna.samplers.RandomSampler(seed=seed, **options)
            case "grid":
                grid = {
                    name: list(dist.choices)  # type: ignore[attr-defined]
                    for name, dist in spec.search_space.distributions().items()
                }
                return optuna.samplers.GridSampler(grid, seed=seed, **options)
            case "cmaes":
                return optuna.samplers.CmaEsSampler(seed=seed, **options)
            case "gp":
                return optuna.samplers.GPSampler(seed=seed, **options)
            case "qmc":
                return optuna.samplers.QMCSampler(seed=seed, **options)
            case "nsga2":
                return optuna.samplers.NSGAIISampler(seed=seed, **options)
    except (TypeError, ValueError) as exc:
        raise SpecError(f"sampler.options: {exc}") from None
    raise SpecError(f"sampler.name: unknown sampler {config.name!r}")


def auto_warmup_steps(spec: StudySpec) -> int:
    """Epochs the ``auto`` pruner lets every trial run before judging it.

    The shortest early-stopping patience the search space allows (its ``patience`` low bound or
    fixed value; Lightning's default 5 when patience is not searched), at most a quarter of
    ``max_epochs``: a trial is not cut before it could have stopped itself, and strongly
    regularized settings, which learn more slowly in the first epochs, are not pruned for it.
    """
    patience = getattr(spec.search_space, "patience", None)
    low = getattr(patience, "low", getattr(patience, "fixed", 5))
    max_epochs = spec.trainer_config.get("max_epochs")
    cap = max(1, max_epochs // 4) if isinstance(max_epochs, int) else int(low)
    return max(0, min(int(low), cap))


def build_pruner(config: PrunerConfig, spec: StudySpec) -> optuna.pruners.BasePruner:
    """The spec's pruner; Hyperband's max resource defaults to the trainer's max_epochs."""
    options: dict[str, Any] = dict(config.options)
    max_epochs = spec.trainer_config.get("max_epochs")
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
        raise SpecError(f"pruner.options: {exc}") from None
    raise SpecError(f"pruner.name: unknown pruner {config.name!r}")


def open_study(storage: BaseStorage, spec: StudySpec, claim_id: int) -> optuna.Study:
    """The Optuna study named like the regtune study, with a freshly seeded sampler and pruner.

    Created if missing (``load_if_exists`` makes concurrent creation by several workers safe).
    """
    sampler = build_sampler(spec.sampler, spec, trial_seed(spec.sampler.seed, claim_id))
    pruner = build_pruner(spec.pruner, spec)
    return optuna.create_study(
        study_name=spec.name,
        storage=storage,
        sampler=sampler,
        pruner=pruner,
        direction=spec.objective.direction,
        load_if_exists=True,
    )
