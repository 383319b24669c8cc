"""Run one claimed trial: Optuna `optimize(n_trials=1)` bound to the claimed slot row."""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import Any

import optuna
from optuna.storages import BaseStorage, RDBStorage
from optuna.trial import TrialState as OptunaState
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from service.config import Settings
from service.db import unit_of_work
from service.models import TrialRole, TrialState
from service.spec import StudySpec
from service.studies import extras, lifecycle
from service.worker import repository as repo
from service.worker.observer import DbTrialObserver
from service.worker.optimization import SpecError, open_extra_study, open_study
from trainers.objective import TrialCancelled, TrialCheckpoint, run_trial

__all__ = [
    "Claim",
    "WorkerContext",
    "WorkerShutdown",
    "record_result",
    "run_claimed_trial",
    "short_error",
]

log = logging.getLogger("regtune.worker")

ERROR_MAX_CHARS = 500
# seconds between tries of a trial's final write (a transient database error is retried)
RECORD_RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0)


class WorkerShutdown(RuntimeError):
    """The worker was asked to stop: the trial is abandoned (FAIL, slot released)."""


class _Unreachable(RuntimeError):
    """The database failed in a way a retry may cure (the claim is given back)."""


class SlotLost(RuntimeError):
    """The claim was swept away before the Optuna trial was bound to it."""


class AbandonedTrialsFilter(logging.Filter):
    """Drops Optuna's "Trial N failed ... Traceback" record for a trial the worker abandoned on
    purpose (a shutdown, a lost slot): the worker says so in one line of its own."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, WorkerShutdown | SlotLost)


def quiet_abandoned_trials() -> None:
    """Install `AbandonedTrialsFilter` on the logger Optuna's `optimize` reports failures on."""
    logger = logging.getLogger("optuna.study._optimize")
    if not any(isinstance(f, AbandonedTrialsFilter) for f in logger.filters):
        logger.addFilter(AbandonedTrialsFilter())


@dataclass
class WorkerContext:
    """What every trial of one worker process shares."""

    settings: Settings
    sessions: sessionmaker[Session]
    storage: RDBStorage
    name: str
    accelerator: str = "cpu"
    devices_per_trial: int = 1
    shutdown: threading.Event = field(default_factory=threading.Event)
    # Optuna's read cache over `storage` (what `optuna.create_study(storage=rdb)` wraps it in),
    # one per study, kept across that study's trials: a fresh one per trial re-read every trial
    # of the study (with its parameters and intermediate values) before each trial. Only the
    # `max_study_caches` most recently used are kept, so a long-lived worker that serves study
    # after study does not hold every trial it has ever seen.
    max_study_caches: int = 8
    _study_caches: OrderedDict[int, BaseStorage] = field(default_factory=OrderedDict)

    def study_storage(self, study_id: int) -> BaseStorage:
        """The cached storage for `study_id`'s trials (least recently used ones are dropped)."""
        cached = self._study_caches.pop(study_id, None)
        if cached is None:
            cached = optuna.storages.get_storage(self.storage)
        self._study_caches[study_id] = cached
        while len(self._study_caches) > self.max_study_caches:
            self._study_caches.popitem(last=False)
        return cached

    def cached_studies(self) -> list[int]:
        """Studies whose trials this worker keeps in memory, least recently used first."""
        return list(self._study_caches)


@dataclass
class Claim:
    study_id: int
    trial_id: int  # regtune_trials.id
    spec: StudySpec
    extra: extras.ExtraRun | None = None  # a reference or confirmation run, not a search trial
    slot: int | None = None
    index: int = 0  # claims of the study before this one (seeds the sampler: open_study)


@dataclass
class _Run:
    """What the objective saw, read back after `optimize` returns."""

    optuna_trial_id: int | None = None
    outcome: Any = None
    error: BaseException | None = None
    cancelled: bool = False
    observer: DbTrialObserver | None = None
    values: list[float] | None = None  # every objective's best-epoch value
    feasible: bool | None = None  # the constraints' verdict (None: the study has none)
    # the training itself failed (the trainer raised, diverged, or gave no finite value), not
    # the database or the worker around it
    trainer_failed: bool = False


def short_error(exc: BaseException) -> str:
    """One line for users (the full traceback goes to the worker log)."""
    text = str(exc).strip().splitlines()
    message = f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
    return message if len(message) <= ERROR_MAX_CHARS else message[: ERROR_MAX_CHARS - 1] + "…"


def _retried_number(system_attrs: dict[str, Any]) -> int | None:
    """The trial a retry replaces: the last of its `retry_history` (Optuna's `failed_trial` is
    the first of the lineage, so a retry of a retry would point at the original)."""
    history = system_attrs.get("retry_history") or []
    parent = history[-1] if history else system_attrs.get("failed_trial")
    return int(parent) if parent is not None else None


def _checkpoint(
    settings: Settings, study_id: int, number: int, system_attrs: dict[str, Any]
) -> TrialCheckpoint | None:
    """Where the trial checkpoints (REGTUNE_CHECKPOINT_DIR); a retry shares its lineage's file
    (named after the first trial, Optuna's `failed_trial`) and resumes from it."""
    if not settings.checkpoint_dir:
        return None
    first = system_attrs.get("failed_trial")
    lineage = int(first) if first is not None else number
    return TrialCheckpoint(
        path=f"{settings.checkpoint_dir.rstrip('/')}/study-{study_id}/trial-{lineage}.ckpt",
        interval_s=settings.checkpoint_interval,
        resume=first is not None,
    )


class _UnprunedTrial(optuna.Trial):
    """A trial of a multi-objective study: Optuna refuses `report` and `should_prune` there
    (NotImplementedError), so regtune reports nothing and never prunes (docs/api.md)."""

    def report(self, value: float, step: int) -> None:
        return None

    def should_prune(self) -> bool:
        return False


def _unpruned(trial: optuna.Trial) -> optuna.Trial:
    """`trial` (same Optuna trial, same state) with `report`/`should_prune` as no-ops."""
    view = _UnprunedTrial.__new__(_UnprunedTrial)
    view.__dict__.update(trial.__dict__)  # shares the cached frozen trial and relative params
    return view


def objective_values(spec: StudySpec, metrics: dict[str, float]) -> list[float]:
    """Each objective's value in `metrics` (the best epoch's), in the spec's order.

    Raises:
        RuntimeError: an objective's metric is missing (the trial fails, saying which).
    """
    missing = [o.metric for o in spec.objectives if o.metric not in metrics]
    if missing:
        raise RuntimeError(
            f"the best epoch has no {', '.join(missing)} (logged: {', '.join(sorted(metrics))})"
        )
    return [float(metrics[o.metric]) for o in spec.objectives]


def set_constraints(trial: optuna.Trial, spec: StudySpec, metrics: dict[str, float]) -> bool | None:
    """Give Optuna each constraint's value (<= 0: holds) measured on the best epoch's `metrics`;
    returns whether all hold (None without constraints). Optuna 5's TPE, NSGA-II and GP
    samplers read them (`Trial.set_constraint`, which replaces the deprecated
    `constraints_func`); the others sample without them."""
    if not spec.constraints:
        return None
    feasible = True
    for constraint in spec.constraints:
        violation = constraint.violation(metrics)
        trial.set_constraint(f"{constraint.metric}{constraint.op}", violation)
        feasible = feasible and violation <= 0
    return feasible


def _objective(ctx: WorkerContext, claim: Claim, spec: StudySpec, run: _Run) -> Any:
    objective_spec = replace(
        spec.objective_spec(accelerator=ctx.accelerator, torch_threads=ctx.settings.torch_threads),
        devices=ctx.devices_per_trial,
    )
    if claim.extra is not None:  # extra runs are never pruned: no gap rule either
        objective_spec = replace(objective_spec, gap_stop_epochs=None)
    if claim.extra is not None and claim.extra.role == TrialRole.reference:
        # regularization off: every parameter fixed, nothing sampled; it reports the epoch
        # training ended with (its best epoch would be early stopping, a regularizer)
        objective_spec = replace(
            objective_spec,
            search_space=extras.reference_space(claim.extra.params),
            report_epoch="last",
        )

    def objective(trial: optuna.Trial) -> float | list[float]:
        run.optuna_trial_id = trial._trial_id
        system_attrs = ctx.storage.get_trial_system_attrs(trial._trial_id)
        retry_of = _retried_number(system_attrs)
        with unit_of_work(ctx.sessions) as session:
            bound = repo.bind_trial(
                session,
                claim.trial_id,
                trial.number,
                trial._trial_id,
                retry_of,
            )
        if not bound:
            run.error = SlotLost("the trial's slot was released before it started")
            raise run.error
        observer = DbTrialObserver(
            ctx.sessions,
            claim.study_id,
            claim.trial_id,
            spec.first_objective.metric,
            spec.first_objective.direction,
            ctx.shutdown,
            ctx.settings.epoch_flush_interval,
        )
        run.observer = observer
        try:
            checkpoint = _checkpoint(ctx.settings, claim.study_id, trial.number, system_attrs)
            ran = _unpruned(trial) if spec.multi_objective else trial
            outcome = run_trial(ran, objective_spec, observer, checkpoint)
            values = objective_values(spec, outcome.best_metrics)
            run.feasible = set_constraints(trial, spec, outcome.best_metrics)
        except TrialCancelled:
            if observer.shutting_down:
                run.error = WorkerShutdown("abandoned: the worker was asked to shut down")
                raise run.error from None
            run.cancelled = True
            raise
        except optuna.TrialPruned:
            if observer.best is not None:  # the sampler sees a pruned trial's feasibility
                run.feasible = set_constraints(trial, spec, observer.best.metrics)
            raise
        except SystemExit as exc:
            # Lightning turns SIGTERM/Ctrl-C into SystemExit, which would escape Optuna and
            # leave the trial RUNNING: make it an ordinary failure instead.
            run.error = WorkerShutdown("abandoned: the worker was asked to shut down")
            raise run.error from exc
        except (WorkerShutdown, SlotLost) as exc:
            # the worker's (a second shutdown signal) or the slot's fate, not the training's:
            # an extra run gives its slot back and is run again
            run.error = exc
            log.warning("trial %s of study %s: %s", trial.number, claim.study_id, exc)
            raise
        except Exception as exc:
            run.error = exc
            run.trainer_failed = not _is_transient(exc)
            log.error("trial %s of study %s failed", trial.number, claim.study_id, exc_info=exc)
            raise
        run.outcome = outcome
        run.values = values
        return values if spec.multi_objective else float(outcome.value)

    return objective


def _result(ctx: WorkerContext, run: _Run) -> repo.TrialResult:
    """Map the Optuna trial's final state (the source of truth) to the row's outcome."""
    frozen = ctx.storage.get_trial(run.optuna_trial_id) if run.optuna_trial_id else None
    observer = run.observer
    best = observer.best if observer else None
    epochs = observer.epochs_run if observer else None
    # what the observer saw so far (pruned, cancelled and failed trials keep it)
    partial = repo.TrialResult(
        TrialState.fail,
        value=best.value if best else None,
        best_epoch=best.epoch if best else None,
        epochs_run=epochs,
        metrics=best.metrics if best else None,
        feasible=run.feasible,
    )
    if frozen is not None and frozen.state == OptunaState.COMPLETE:
        outcome = run.outcome
        if outcome is None:  # should not happen; keep what Optuna has
            first = frozen.values[0] if frozen.values else None
            return replace(partial, state=TrialState.complete, value=first, values=frozen.values)
        return repo.TrialResult(
            TrialState.complete,
            value=float(outcome.value),
            best_epoch=outcome.best_epoch,
            epochs_run=outcome.epochs_run,
            metrics=outcome.best_metrics,
            test_metrics=outcome.test_metrics,
            values=run.values,
            feasible=run.feasible,
            train_seed=_seed(frozen.user_attrs),
        )
    if frozen is not None:
        partial = replace(partial, train_seed=_seed(frozen.user_attrs))
    if frozen is not None and frozen.state == OptunaState.PRUNED:
        state = TrialState.cancelled if run.cancelled else TrialState.pruned
        return replace(partial, state=state)
    error = run.error
    trainer_failed = run.trainer_failed
    if error is not None:
        message = short_error(error)
    elif run.values is not None and len(run.values) > 1:
        message = f"objective values {run.values!r} are not all finite numbers"
        trainer_failed = True
    elif run.outcome is not None:
        message = f"objective value {run.outcome.value!r} is not a finite number"
        trainer_failed = True
    else:
        message = "the trial did not run"
    return replace(
        partial,
        error=message,
        counts_as_failure=not isinstance(error, WorkerShutdown | SlotLost),
        trainer_failed=trainer_failed,
    )


def _seed(user_attrs: dict[str, Any]) -> int | None:
    """The training seed the trainer recorded (`train_seed`), if any."""
    seed = user_attrs.get("train_seed")
    return seed if isinstance(seed, int) and not isinstance(seed, bool) else None


def _is_transient(exc: BaseException) -> bool:
    """A database error that a retry may cure (connection lost, server restarting, locked)."""
    if isinstance(exc, optuna.exceptions.StorageInternalError) and exc.__cause__ is not None:
        exc = exc.__cause__  # Optuna wraps the SQLAlchemy error of a failed commit
    if isinstance(exc, OperationalError | InterfaceError):
        return True
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)


def _open(ctx: WorkerContext, claim: Claim) -> optuna.Study:
    """The claim's Optuna study; SpecError for anything but a database error.

    Building the sampler, the pruner or the study can fail in ways Optuna does not document
    (a grid too large to list, an option of the wrong type deep inside a sampler): every such
    error means no worker can ever run the study, so it fails the study instead of crashing
    the worker or handing the same study to the next claim.
    """
    try:
        storage = ctx.study_storage(claim.study_id)
        if claim.extra is not None and claim.slot is not None:
            return open_extra_study(storage, claim.spec, claim.extra, claim.slot)
        return open_study(storage, claim.spec, claim.index)
    except SpecError:
        raise
    except Exception as exc:
        if _is_transient(exc):
            raise _Unreachable(short_error(exc)) from exc
        log.error("cannot open study %s", claim.study_id, exc_info=exc)
        raise SpecError(short_error(exc)) from exc


def _give_back(ctx: WorkerContext, claim: Claim, ending: lifecycle.Ending | None = None) -> None:
    """Release the claim's slot (no Optuna trial was created); end the study with `ending`."""
    try:
        with unit_of_work(ctx.sessions) as session:
            study_row = repo.lock_study(session, claim.study_id)
            repo.delete_claim(session, claim.trial_id)
            if study_row is not None:
                if ending is not None:
                    repo.end_study(session, study_row, ending)
                repo.refresh_study(session, study_row)
    except Exception:
        # the sweep deletes a claim left behind once its grace period is over
        log.warning("cannot give back the claim of study %s", claim.study_id, exc_info=True)


def _write_result(ctx: WorkerContext, claim: Claim, result: repo.TrialResult) -> None:
    with unit_of_work(ctx.sessions) as session:
        study_row = repo.lock_study(session, claim.study_id)
        if study_row is not None:
            repo.finish_trial(session, study_row, claim.trial_id, result)
            repo.refresh_study(
                session, study_row, ctx.settings.max_consecutive_failures, result.error
            )


def _try_write(ctx: WorkerContext, claim: Claim, result: repo.TrialResult) -> Exception | None:
    """Write `result`, retrying transient database errors; the last error, None when stored."""
    for delay in (*RECORD_RETRY_DELAYS, None):
        try:
            _write_result(ctx, claim, result)
            return None
        except Exception as exc:
            if delay is None or not _is_transient(exc):
                return exc
            log.warning(
                "cannot record a trial of study %s (%s); retrying in %.1f s",
                claim.study_id,
                exc.__class__.__name__,
                delay,
            )
            time.sleep(delay)
    return None  # pragma: no cover - the loop always returns


def record_result(ctx: WorkerContext, claim: Claim, result: repo.TrialResult) -> TrialState:
    """Store a finished trial's outcome; never raises.

    A write that keeps failing (a value the database refuses, or a database that stays away
    through every retry) records the trial `fail` with the reason instead; if even that cannot
    be written, the stale-trial sweep reconciles the row from Optuna later.
    """
    error = _try_write(ctx, claim, result)
    if error is None:
        return result.state
    log.error("cannot record a trial of study %s", claim.study_id, exc_info=error)
    failed = repo.TrialResult(
        TrialState.fail,
        epochs_run=result.epochs_run,
        error=f"cannot record the trial's result: {short_error(error)}",
        # a database that stays away is not the trial's fault; a value it refuses is
        counts_as_failure=not _is_transient(error),
    )
    second = _try_write(ctx, claim, failed)
    if second is not None:
        log.error("cannot record trial failure of study %s", claim.study_id, exc_info=second)
    return TrialState.fail


def run_claimed_trial(ctx: WorkerContext, claim: Claim) -> TrialState | None:
    """Run the Optuna trial for `claim` and record its outcome; returns the row's final state.

    Never raises for a trial's own failure. Returns None when no Optuna trial was created: the
    claim is given back (the caller backs off from the study), or the study is failed when its
    spec cannot be opened.
    """
    run = _Run()
    try:
        study = _open(ctx, claim)
    except SpecError as exc:
        log.error("study %s cannot run: %s", claim.study_id, exc)
        _give_back(ctx, claim, lifecycle.spec_failure(str(exc)))
        return None
    except _Unreachable as exc:
        log.warning("cannot open study %s (%s)", claim.study_id, exc)
        _give_back(ctx, claim)
        return None
    try:
        study.optimize(_objective(ctx, claim, claim.spec, run), n_trials=1, catch=(Exception,))
    except Exception as exc:
        # storage trouble or an Optuna internal error: record what we know, keep the worker up
        log.exception("trial of study %s crashed outside the objective", claim.study_id)
        run.error = run.error or exc
    if run.optuna_trial_id is None:
        _give_back(ctx, claim)
        return None
    if run.observer is not None:  # epochs still buffered (the observer batches its writes)
        try:
            run.observer.flush()
        except Exception:
            log.exception("cannot store the last epochs of a trial of study %s", claim.study_id)
    try:
        result = _result(ctx, run)
    except Exception as exc:  # Optuna's storage is away: record what the worker saw
        run.error = run.error or exc
        result = repo.TrialResult(TrialState.fail, error=short_error(exc), counts_as_failure=False)
    return record_result(ctx, claim, result)
