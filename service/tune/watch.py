"""Follow a study until it ends, reporting each finished trial; shared by local and server mode."""

from __future__ import annotations

import time
from typing import Any, Protocol

from service.tune.errors import ExitCode, TuneError
from service.tune.progress import Reporter

__all__ = ["FINAL_STATUSES", "StudySource", "TimedOut", "watch"]

FINAL_STATUSES = frozenset({"completed", "failed", "cancelled"})


class StudySource(Protocol):
    """One study, read in the REST API's JSON shapes (StudyDetail, TrialSummary, BestResult)."""

    def study(self) -> dict[str, Any]: ...
    def finished_trials(self) -> list[dict[str, Any]]: ...
    def best(self) -> dict[str, Any] | None: ...
    def cancel(self) -> None: ...
    def problem(self) -> str | None:
        """Why the study can no longer make progress (e.g. every local worker died), or None."""
        ...


class TimedOut(Exception):
    """`--timeout` elapsed before the study ended."""


def watch(
    source: StudySource, reporter: Reporter, deadline: float | None, poll_s: float
) -> dict[str, Any]:
    """Poll until the study's status is final; returns the final study.

    Raises:
        TimedOut: `deadline` (a `time.monotonic()` instant) passed first.
        TuneError: the source reports it cannot make progress (exit 3).
    """
    seen: set[int] = set()
    last_count = -1
    while True:
        study = source.study()
        p = study["progress"]
        # extra runs (reference, confirmation) are counted apart from finished and failed
        count = p["finished"] + p["failed"] + p.get("extra_finished", 0)
        final = study["status"] in FINAL_STATUSES
        reporter.poll(study)
        if count != last_count or final:
            last_count = count
            for trial in source.finished_trials():
                if trial["number"] not in seen:
                    seen.add(trial["number"])
                    reporter.trial(trial, study)
        if final:
            return study
        problem = source.problem()
        if problem is not None:
            raise TuneError(ExitCode.STUDY_FAILED, problem)
        if deadline is not None and time.monotonic() >= deadline:
            raise TimedOut()
        time.sleep(poll_s)
