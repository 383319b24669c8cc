"""The life of a study, as pure functions over its counts and times.

queued --first claim--> running --budget met / deadline passed--> completed
   |                        |--failure streak / unopenable spec--> failed
   '------------------------'--cancel--> cancelled

Every rule about when a study starts, its deadline, when it completes, times out or fails, and
which statuses still take trials lives here. The repositories run the queries (counts, locks,
conditional UPDATEs) and write what these functions decide; nothing here touches the database.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from service.models import StudyStatus, TrialState

__all__ = [
    "ACTIVE_STATUSES",
    "STOPPING_STATUSES",
    "Counts",
    "Ending",
    "Start",
    "accepts_claims",
    "deadline_for",
    "ending_after_trials",
    "failure_streak",
    "is_active",
    "spec_failure",
    "start_on_claim",
    "stops_running_trials",
]

# statuses whose studies still hand out trials (and can be cancelled or failed)
ACTIVE_STATUSES: tuple[str, ...] = (StudyStatus.queued.value, StudyStatus.running.value)
# a study that reaches one of these stops its running trials at their next epoch
STOPPING_STATUSES: tuple[str, ...] = (StudyStatus.cancelled.value, StudyStatus.failed.value)


@dataclass(frozen=True)
class Counts:
    """A study's trials by state (what its counters hold after a refresh)."""

    complete: int = 0
    pruned: int = 0
    failed: int = 0
    running: int = 0  # claimed or running

    @property
    def finished(self) -> int:
        """Trials that count towards `n_trials` (complete or pruned)."""
        return self.complete + self.pruned


@dataclass(frozen=True)
class Start:
    """What a queued study becomes on its first claim."""

    status: StudyStatus
    started_at: datetime
    deadline_at: datetime | None


@dataclass(frozen=True)
class Ending:
    """A study's final status and the reason shown with it (None: no note)."""

    status: StudyStatus
    error: str | None = None


def is_active(status: str) -> bool:
    return status in ACTIVE_STATUSES


def stops_running_trials(status: str | None) -> bool:
    """Whether a study's running trials should stop (cancelled, failed, or deleted: None)."""
    return status is None or status in STOPPING_STATUSES


def deadline_for(spec: Mapping[str, Any], started_at: datetime) -> datetime | None:
    """When a study started at `started_at` stops handing out trials (`budget.timeout_s`)."""
    timeout = (spec.get("budget") or {}).get("timeout_s")
    return started_at + timedelta(seconds=float(timeout)) if timeout else None


def start_on_claim(status: str, spec: Mapping[str, Any], now: datetime) -> Start | None:
    """A queued study starts (running, its deadline set) when a worker first claims a slot."""
    if status != StudyStatus.queued.value:
        return None
    return Start(StudyStatus.running, now, deadline_for(spec, now))


def accepts_claims(status: str, deadline_at: datetime | None, now: datetime) -> bool:
    """Whether a study may hand out another trial slot now."""
    return is_active(status) and (deadline_at is None or now < deadline_at)


def failure_streak(
    previous: int, state: TrialState, counts_as_failure: bool, *, extra: bool = False
) -> int:
    """Consecutive failed trials after one ends in `state`.

    A complete or pruned trial resets the streak; a trial abandoned by a worker shutdown or a
    lost worker (`counts_as_failure` False), a cancelled one and a failed `extra` run (a
    reference or confirmation run: never re-run, see `keeps_slot`, so it cannot burn the
    budget) leave it as it was.
    """
    if state == TrialState.fail and counts_as_failure:
        return previous if extra else previous + 1
    if state.is_finished:
        return 0
    return previous


def keeps_slot(state: TrialState, trainer_failed: bool, *, extra: bool) -> bool:
    """Whether a trial that ended in `state` keeps its slot (counts as done in the budget).

    Complete and pruned trials do. A failed search trial gives its slot back, so the study
    still ends with `n_trials` finished trials (another point is sampled). A failed `extra` run
    (reference, confirmation repeat) whose training itself failed (`trainer_failed`: diverged,
    the trainer raised) keeps it: run again it would train the same configuration from the
    same seed and fail the same way, so the failure is its result. Any other failure (the
    database, a lost worker, a shutdown) gives the slot back and the run is tried again.
    """
    if state in (TrialState.complete, TrialState.pruned):
        return True
    return extra and state == TrialState.fail and trainer_failed


def ending_after_trials(
    *,
    status: str,
    n_trials: int,
    counts: Counts,
    deadline_at: datetime | None,
    now: datetime,
    consecutive_failures: int,
    max_consecutive_failures: int | None,
    last_error: str | None = None,
    n_extra: int = 0,
    extra_finished: int = 0,
) -> Ending | None:
    """How an active study ends given its trials, or None while it goes on.

    Completed once `n_trials` search trials and its `n_extra` extra runs (reference,
    confirmation) finished; completed with a note once its deadline passed and nothing runs;
    failed after `max_consecutive_failures` failures in a row.
    """
    if not is_active(status):
        return None
    if counts.finished >= n_trials and extra_finished >= n_extra:
        return Ending(StudyStatus.completed)
    if deadline_at is not None and now >= deadline_at and counts.running == 0:
        note = f"budget.timeout_s reached after {counts.finished} of {n_trials} trials"
        return Ending(StudyStatus.completed, note)
    if max_consecutive_failures is not None and consecutive_failures >= max_consecutive_failures:
        reason = f"{consecutive_failures} trials failed in a row"
        return Ending(
            StudyStatus.failed, f"{reason}; last error: {last_error}" if last_error else reason
        )
    return None


def spec_failure(reason: str) -> Ending:
    """A study whose stored spec cannot be opened (parsed, or its sampler/pruner/Optuna study
    built) fails at once with the reason: no worker can ever run it."""
    return Ending(StudyStatus.failed, f"invalid spec: {reason}")
