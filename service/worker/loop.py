"""The worker loop: pick the oldest study with a free slot, claim it, run one trial, repeat."""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
from dataclasses import dataclass
from types import FrameType
from typing import Any

from pydantic import ValidationError
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from service.config import Settings
from service.db import make_engine, make_session_factory, unit_of_work
from service.models import StudyRecord
from service.observability import log_context
from service.spec import StudySpec
from service.studies import lifecycle
from service.worker import repository as repo
from service.worker.optimization import open_storage, quiet_optuna
from service.worker.stale import sweep_with
from service.worker.trial import (
    Claim,
    WorkerContext,
    WorkerShutdown,
    quiet_abandoned_trials,
    run_claimed_trial,
)
from trainers import available_trainers
from trainers.space import STORED

__all__ = ["WorkerOptions", "run_worker"]

log = logging.getLogger("regtune.worker")

_CLAIM_ATTEMPTS = 5
# a study this worker could not open is left alone this long, doubling up to the cap
BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 60.0


@dataclass
class WorkerOptions:
    """What `regtune worker` was asked to do (one process, one trial at a time)."""

    study_id: int | None = None
    once: bool = False
    max_trials: int | None = None
    exit_when_idle: bool = False
    accelerator: str = "cpu"
    name: str | None = None
    devices_per_trial: int = 1  # > 1: each trial is a DDP run over that many devices


class _Specs:
    """Parsed specs by study id; studies this worker cannot run are skipped, not failed."""

    def __init__(self) -> None:
        self.parsed: dict[int, StudySpec] = {}
        self.skipped: set[int] = set()

    def get(self, session: Session, study: StudyRecord) -> StudySpec | None:
        """The locked `study`'s spec; an unreadable one fails the study in `session`.

        The caller's session already holds the study's row lock: failing the study in another
        transaction would wait on that lock forever (PostgreSQL) or find SQLite locked.
        """
        if study.id in self.parsed:
            return self.parsed[study.id]
        try:
            # rules added after it was accepted do not fail a queued study (`space.STORED`)
            spec = StudySpec.model_validate(study.spec, context={STORED: True})
        except ValidationError as exc:
            if study.trainer not in available_trainers():
                # another worker (with that plugin installed) may run it
                log.warning(
                    "skipping study %s: trainer %r is not installed here", study.id, study.trainer
                )
                self.skipped.add(study.id)
                return None
            error = exc.errors()[0]
            where = ".".join(str(p) for p in error["loc"])
            reason = f"{where}: {error['msg']}" if where else error["msg"]
            log.error("study %s cannot run: %s", study.id, reason)
            repo.end_study(session, study, lifecycle.spec_failure(reason))
            return None
        self.parsed[study.id] = spec
        return spec


class Backoff:
    """Studies whose last claim gave no trial: skipped for a while, twice as long each time.

    A study whose Optuna study could not be opened (the database was away, or something this
    worker cannot tell apart from that) would otherwise be the oldest candidate again at once,
    and one bad study would hold every worker in a tight loop while newer studies wait.
    """

    def __init__(self, first: float = BACKOFF_FIRST_S, cap: float = BACKOFF_MAX_S) -> None:
        self.first = first
        self.cap = cap
        self._misses: dict[int, int] = {}
        self._until: dict[int, float] = {}

    def delay(self, study_id: int) -> float:
        """The wait after the study's latest miss (0 when it has none)."""
        misses = self._misses.get(study_id, 0)
        return min(self.cap, self.first * 2 ** (misses - 1)) if misses else 0.0

    def miss(self, study_id: int) -> None:
        self._misses[study_id] = self._misses.get(study_id, 0) + 1
        self._until[study_id] = time.monotonic() + self.delay(study_id)

    def ran(self, study_id: int) -> None:
        self._misses.pop(study_id, None)
        self._until.pop(study_id, None)

    def waiting(self) -> list[int]:
        """Studies to skip now."""
        now = time.monotonic()
        return sorted(s for s, until in self._until.items() if until > now)


def claim_next(
    ctx: WorkerContext, specs: _Specs, only: int | None, backoff: Backoff | None = None
) -> Claim | None:
    """Claim a slot in the oldest study that has one; None when there is no work."""
    exclude = sorted({*specs.skipped, *(backoff.waiting() if backoff else ())})
    with unit_of_work(ctx.sessions) as session:
        candidates = repo.candidate_studies(session, only, exclude=exclude)
    for study_id in candidates:
        for _attempt in range(_CLAIM_ATTEMPTS):
            try:
                with unit_of_work(ctx.sessions) as session:
                    study = repo.lock_study(session, study_id)
                    if study is None:
                        break
                    spec = specs.get(session, study)
                    if spec is None:
                        break
                    row = repo.claim_slot(session, study, ctx.name)
                    if row is None:
                        break
                    return Claim(
                        study_id=study_id,
                        trial_id=row.id,
                        spec=spec,
                        extra=repo.extra_run(row),
                        slot=row.slot,
                        index=repo.claim_index(session, row),
                    )
            except IntegrityError:
                continue  # someone took that slot between our read and insert: look again
    return None


# Signals this soon after the first are the same request: Ctrl-C reaches the whole process
# group, so a worker under `regtune serve` gets the terminal's SIGINT and then its supervisor's
# SIGTERM (or a forwarded SIGINT) within milliseconds.
SAME_REQUEST_S = 1.0


def _install_signals(ctx: WorkerContext) -> dict[int, Any]:
    first: list[float] = []

    def handler(signum: int, _frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if ctx.shutdown.is_set():
            if first and time.monotonic() - first[0] < SAME_REQUEST_S:
                log.info("%s received: already shutting down", name)
                return
            # a second request: abandon now (Optuna records FAIL, the slot is released)
            raise WorkerShutdown("abandoned: the worker was asked to shut down twice")
        log.warning(
            "%s received: abandoning the current trial at its next step, then exiting", name
        )
        first.append(time.monotonic())
        ctx.shutdown.set()

    return {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}


def _default_name() -> str:
    """host:pid, plus the GPU a device-placed worker sees (shown with each trial)."""
    name = f"{socket.gethostname()}:{os.getpid()}"
    device = os.environ.get("CUDA_VISIBLE_DEVICES")
    return f"{name}:gpu{device}" if device else name


def make_context(settings: Settings, options: WorkerOptions) -> WorkerContext:
    engine = make_engine(settings.database_url, worker=True)
    return WorkerContext(
        settings=settings,
        sessions=make_session_factory(engine),
        storage=open_storage(settings.database_url, settings),
        name=options.name or _default_name(),
        accelerator=options.accelerator,
        devices_per_trial=options.devices_per_trial,
    )


def run_worker(settings: Settings, options: WorkerOptions, *, handle_signals: bool = True) -> int:
    """Run trials until told to stop; returns how many trials this worker ran."""
    quiet_optuna()
    quiet_abandoned_trials()
    ctx = make_context(settings, options)
    previous = _install_signals(ctx) if handle_signals else {}
    specs = _Specs()
    backoff = Backoff()
    ran = 0
    last_sweep = 0.0
    # Load the trainer plugins (and with them torch and Lightning) before the first claim: the
    # claim validates the study's spec, which names a trainer, while it holds the study's row
    # lock, and N workers started together would otherwise import one after the other.
    trainers = available_trainers()
    log.info(
        "worker %s started on %s; trainers: %s",
        ctx.name,
        ctx.accelerator,
        ", ".join(sorted(trainers)) or "none",
    )
    try:
        while not ctx.shutdown.is_set():
            if time.monotonic() - last_sweep >= settings.heartbeat_interval:
                last_sweep = time.monotonic()
                try:
                    sweep_with(ctx.sessions, ctx.storage, settings)
                except Exception:  # a sweep's trouble must never stop this worker's trials
                    log.warning("stale-trial sweep failed; will retry", exc_info=True)
            try:
                claim = claim_next(ctx, specs, options.study_id, backoff)
            except SQLAlchemyError as exc:
                # the database restarts or is briefly unreachable: keep polling
                log.warning("cannot claim a trial (%s); retrying", exc.__class__.__name__)
                ctx.shutdown.wait(settings.worker_poll_interval)
                continue
            if claim is None:
                # a study in back-off is work still to do, not idleness
                if (options.once or options.exit_when_idle) and not backoff.waiting():
                    break
                ctx.shutdown.wait(settings.worker_poll_interval)
                continue
            with log_context(study_id=claim.study_id, trial_id=claim.trial_id):
                state = run_claimed_trial(ctx, claim)
            if state is None:
                backoff.miss(claim.study_id)
                log.info(
                    "no trial of study %s ran; not claiming it for %.0f s",
                    claim.study_id,
                    backoff.delay(claim.study_id),
                )
            else:
                backoff.ran(claim.study_id)
                ran += 1
                log.info("trial of study %s ended %s", claim.study_id, state.value)
            if options.once or (options.max_trials is not None and ran >= options.max_trials):
                break
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        ctx.storage.remove_session()
        ctx.storage.engine.dispose()
        ctx.sessions.kw["bind"].dispose()  # the engine make_context opened (its pool)
    log.info("worker %s stopped after %d trials", ctx.name, ran)
    return ran
