"""A long-lived Optuna RDBStorage for the API process (built on first use, not per request)."""

from __future__ import annotations

import threading

import optuna

from service.db import engine_kwargs, normalize_url

__all__ = ["LazyOptunaStorage"]


class LazyOptunaStorage:
    """Opens Optuna's storage on the shared database the first time it is needed.

    Lazy so that the API starts (and /healthz answers 503) while the database is down. The schema
    is created by `service.migrations.upgrade`, never here (concurrent creation races,
    optuna#4621).
    """

    def __init__(self, url: str) -> None:
        self.url = normalize_url(url)
        self._storage: optuna.storages.RDBStorage | None = None
        self._lock = threading.Lock()

    def get(self) -> optuna.storages.RDBStorage:
        with self._lock:
            if self._storage is None:
                self._storage = optuna.storages.RDBStorage(
                    self.url, engine_kwargs=engine_kwargs(self.url), skip_table_creation=True
                )
            return self._storage

    def dispose(self) -> None:
        with self._lock:
            if self._storage is not None:
                self._storage.engine.dispose()
                self._storage = None
