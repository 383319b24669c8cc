"""Optuna pieces a worker rebuilds from the stored spec: storage, sampler, pruner, study.

Optuna keeps neither the sampler nor the pruner in the database, so every trial rebuilds them
from the study spec (with `service.optuna_builders`, which the API also uses at submit). Each
trial gets its own sampler seed derived from the study seed and the claim's index in its study
(`trial_seed`): two workers never replay the same random start-up suggestions, and a seeded
study run by one worker samples the same trials again, also on a database holding other studies.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.storages import BaseStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState as OptunaState

from service.config import Settings
from service.db import (
    SQLITE_WORKER_PRAGMAS,
    engine_kwargs,
    install_sqlite_pragmas,
    normalize_url,
)
from service.optuna_builders import SpecError, auto_warmup_steps, build_pruner, build_sampler
from service.spec import StudySpec
from service.studies import extras
from service.worker.rdb import WorkerRDBStorage

__all__ = [
    "ExtraStudy",
    "SpecError",
    "auto_warmup_steps",
    "build_pruner",
    "build_sampler",
    "open_extra_study",
    "open_storage",
    "open_study",
    "trial_seed",
]

_SEED_MODULUS = 2**31 - 1
_WAITING, _RUNNING = OptunaState.WAITING, OptunaState.RUNNING


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


def trial_seed(study_seed: int | None, claim_index: int) -> int | None:
    """A distinct, reproducible seed per claim of a study (`claim_index`: claims of the study
    before it, `repository.claim_index`); None (entropy) when the study has no seed."""
    if study_seed is None:
        return None
    return (study_seed * 1_000_003 + claim_index) % _SEED_MODULUS


class ExtraStudy(optuna.Study):
    """The Optuna study as an extra run (reference, confirmation repeat) sees it: its `ask`
    starts that run's trial instead of sampling or popping any queued trial.

    The trial is the run's own retry when one is queued (a crashed extra run: Optuna's retry
    copies its user attributes, `regtune:slot` among them), else a new trial created running
    with the run's parameters (a confirmation repeats its trial's parameters and
    distributions; the reference run has none: its parameters are fixed) and user attributes
    (`regtune:role`, `train_seed`, `regtune:repeat_of`, `regtune:slot`). So concurrent extra
    runs never take each other's trials, and the sampler is never asked (no pruner either:
    an extra run always trains to its own early stop).
    """

    def __init__(
        self, study_name: str, storage: BaseStorage, run: extras.ExtraRun, slot: int
    ) -> None:
        super().__init__(
            study_name=study_name,
            storage=storage,
            sampler=optuna.samplers.RandomSampler(),
            pruner=optuna.pruners.NopPruner(),
        )
        self.run = run
        self.slot = slot

    def ask(
        self, fixed_distributions: dict[str, BaseDistribution] | None = None
    ) -> optuna.trial.Trial:
        return optuna.trial.Trial(self, self._start_trial())

    def _start_trial(self) -> int:
        storage, study_id = self._storage, self._study_id
        for waiting in storage.get_all_trials(study_id, deepcopy=False, states=(_WAITING,)):
            if waiting.user_attrs.get(extras.SLOT_ATTR) == self.slot:
                with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
                    if storage.set_trial_state_values(waiting._trial_id, state=_RUNNING):
                        return waiting._trial_id
        params: dict[str, Any] = {}
        dists: dict[str, BaseDistribution] = {}
        if self.run.repeat_of is not None:
            repeated = storage.get_trial(
                storage.get_trial_id_from_study_id_trial_number(study_id, self.run.repeat_of)
            )
            params, dists = dict(repeated.params), dict(repeated.distributions)
        template = optuna.trial.create_trial(
            state=_RUNNING,
            params=params,
            distributions=dists,
            user_attrs=self.run.user_attrs(self.slot),
        )
        return storage.create_new_trial(study_id, template_trial=template)


def open_extra_study(
    storage: BaseStorage, spec: StudySpec, run: extras.ExtraRun, slot: int
) -> ExtraStudy:
    """The study for extra run `run` in `slot` (the Optuna study exists: the search ran)."""
    return ExtraStudy(spec.name, storage, run, slot)


def open_study(storage: BaseStorage, spec: StudySpec, claim_index: int) -> optuna.Study:
    """The Optuna study named like the regtune study, with a sampler seeded for this claim
    (`trial_seed`) and a fresh pruner.

    Created if missing (``load_if_exists`` makes concurrent creation by several workers safe).
    """
    sampler = build_sampler(spec.sampler, spec, trial_seed(spec.sampler.seed, claim_index))
    pruner = build_pruner(spec.pruner, spec)
    return optuna.create_study(
        study_name=spec.name,
        storage=storage,
        sampler=sampler,
        pruner=pruner,
        directions=[objective.direction for objective in spec.objectives],
        load_if_exists=True,
    )
