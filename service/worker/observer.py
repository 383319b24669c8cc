"""The TrialObserver a worker passes to `run_trial`: stores epochs, watches for cancellation."""

from __future__ import annotations

import math
import threading
import time
from typing import Any

import optuna
from sqlalchemy.orm import Session, sessionmaker

from service.db import unit_of_work
from service.studies import lifecycle
from service.worker import repository as repo
from trainers.best import BestEpoch, improved_best, maximizes
from trainers.objective import EpochRecord
from trainers.params import RegularizationParams

__all__ = ["DbTrialObserver"]


class DbTrialObserver:
    """Writes epochs to SQL and polls the study status at each write.

    Writes are batched: at most one transaction per `flush_interval` seconds (the first epoch at
    once, epochs longer than the interval one by one), and `flush()` at the trial's end. A tiny
    model's epochs take milliseconds, and a commit per epoch would cost more than the epoch.

    `should_stop()` is true when the study was cancelled (or failed) or when the worker was asked
    to shut down (`shutdown` event); `run_trial` then ends the trial at the epoch boundary.
    """

    def __init__(
        self,
        sessions: sessionmaker[Session],
        study_id: int,
        trial_id: int,
        metric: str,
        direction: str,
        shutdown: threading.Event,
        flush_interval: float = 1.0,
    ) -> None:
        self._sessions = sessions
        self._study_id = study_id
        self._trial_id = trial_id
        self._metric = metric
        self._maximize = maximizes(direction)
        self._shutdown = shutdown
        self.study_stopped = False
        self.epochs_run = 0
        self.best: BestEpoch | None = None
        self._flush_interval = flush_interval
        # metrics as logged; the repository stores NaN/inf as null (`repo.clean_metrics`)
        self._pending: list[tuple[int, dict[str, Any]]] = []
        self._best_changed = False
        self._last_flush = -math.inf

    def on_start(self, trial: optuna.trial.BaseTrial, params: RegularizationParams) -> None:
        with unit_of_work(self._sessions) as session:
            repo.set_params(session, self._trial_id, params.model_dump())

    def on_epoch(self, trial: optuna.trial.BaseTrial, record: EpochRecord) -> None:
        metrics = {k: float(v) for k, v in record.metrics.items()}
        best = improved_best(
            self.best, record.epoch, metrics, self._metric, maximize=self._maximize
        )
        if best is not None:
            self.best = best
        self.epochs_run = max(self.epochs_run, record.epoch + 1)
        self._pending.append((record.epoch, metrics))
        self._best_changed = self._best_changed or best is not None
        if time.monotonic() - self._last_flush >= self._flush_interval:
            self.flush()

    def flush(self) -> None:
        """Write the epochs not yet stored, then read the study's status."""
        if not self._pending:
            return
        with unit_of_work(self._sessions) as session:
            repo.add_epochs(
                session,
                self._trial_id,
                self._pending,
                self.best if self._best_changed else None,
            )
            status = repo.study_status(session, self._study_id)
        self._pending = []
        self._best_changed = False
        self._last_flush = time.monotonic()
        self.study_stopped = lifecycle.stops_running_trials(status)

    def should_stop(self) -> bool:
        return self.study_stopped or self._shutdown.is_set()

    @property
    def shutting_down(self) -> bool:
        """Stopped because the worker is shutting down (not because of the study)."""
        return self._shutdown.is_set() and not self.study_stopped
