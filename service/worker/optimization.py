"""Optuna pieces a worker rebuilds from the stored spec: storage, sampler, pruner, study.

Optuna keeps neither the sampler nor the pruner in the database, so every trial rebuilds them
from the study spec (with `service.optuna_builders`, which the API also uses at submit). Each
trial gets its own sampler seed derived from the study seed and the trial's claim id: two
workers never replay the same random start-up suggestions, and a one-worker study stays
reproducible.
"""

from __future__ import annotations

import warnings

import optuna
from optuna.storages import BaseStorage, RDBStorage, RetryHeartbeatStaleTrialCallback

from service.config import Settings
from service.db import (
    SQLITE_WORKER_PRAGMAS,
    engine_kwargs,
    install_sqlite_pragmas,
    normalize_url,
)
from service.optuna_builders import SpecError, auto_warmup_steps, build_pruner, build_sampler
from service.spec import StudySpec
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
        directions=[objective.direction for objective in spec.objectives],
        load_if_exists=True,
    )
