"""The API process's stale-trial sweeper: a daemon thread calling the worker's sweep.

Optuna fails a dead worker's trial only when another worker starts a trial; the workers' own
sweep needs a live worker too. This thread runs the same sweep (`service.worker.stale`) every
`Settings.sweep_interval` seconds from the API process, so a study whose workers all died gets
its trials failed (and retried with the same parameters) as soon as their heartbeat is older
than the grace period, and its counters stay true.
"""

from __future__ import annotations

import logging
import threading

from optuna.storages import RDBStorage
from sqlalchemy.orm import Session, sessionmaker

from service.config import Settings

__all__ = ["StaleTrialSweeper"]

log = logging.getLogger("regtune.sweeper")


class StaleTrialSweeper:
    """Start with `start()`, stop with `stop()`; never raises into the API."""

    def __init__(self, settings: Settings, sessions: sessionmaker[Session]) -> None:
        self.settings = settings
        self.sessions = sessions
        self.interval = settings.sweep_interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._storage: RDBStorage | None = None
        self.sweeps = 0  # completed sweeps (for logs and tests)

    def start(self) -> None:
        if self.interval <= 0 or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="regtune-sweeper", daemon=True)
        self._thread.start()
        log.info("stale-trial sweeper running every %ss", self.interval)

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if self._storage is not None:
            self._storage.remove_session()
            self._storage.engine.dispose()
            self._storage = None

    def sweep_once(self) -> int:
        """One sweep; returns how many trials it reconciled."""
        from service.worker.optimization import open_storage
        from service.worker.stale import sweep_with

        if self._storage is None:  # opened lazily: the API starts while the database is down
            self._storage = open_storage(self.settings.database_url, self.settings)
        changed = sweep_with(self.sessions, self._storage, self.settings)
        self.sweeps += 1
        return changed

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                changed = self.sweep_once()
            except Exception:  # the database restarts, a race with a worker: try next time
                log.warning("stale-trial sweep failed; next in %ss", self.interval, exc_info=True)
                continue
            if changed:
                log.info("sweeper reconciled %d trial(s)", changed)
