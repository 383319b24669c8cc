"""Optuna's storage as the API uses it: a long-lived RDBStorage, and the little SQL on its tables.

regtune writes Optuna's tables through Optuna's API, with one exception that needs a shared
transaction: a submission builds its Optuna study under a *pending* name that no regtune study
can have (``regtune:submit:<unix time>:<hex>``), then gives it its real name in the same
transaction that inserts regtune's row (`rename_study`). Either both commit or neither does, so
a crash or a lost race leaves at most a pending study that blocks no name and that the sweep
deletes (`pending_submissions`). The sweep also reads trial states and heartbeats here, to find
the trials that need it in one query (`service.reliability.repository`). These tables and
columns are unchanged since Optuna 2.x (schema head ``v3.2.0.a``).
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Sequence

import optuna
from sqlalchemy import Column, DateTime, Integer, MetaData, String, Table, select, update
from sqlalchemy.orm import Session

from service.db import engine_kwargs, normalize_url

__all__ = [
    "OPTUNA_HEARTBEATS",
    "OPTUNA_STUDIES",
    "OPTUNA_TRIALS",
    "PENDING_PREFIX",
    "LazyOptunaStorage",
    "pending_name",
    "pending_submissions",
    "rename_study",
]

# Not part of regtune's metadata: Alembic must never see (or try to create) Optuna's tables.
_OPTUNA_METADATA = MetaData()
OPTUNA_STUDIES = Table(
    "studies",
    _OPTUNA_METADATA,
    Column("study_id", Integer, primary_key=True),
    Column("study_name", String(512)),
)
# `state` is an enum type on PostgreSQL: compare it as text (CAST), never as a bound enum
OPTUNA_TRIALS = Table(
    "trials",
    _OPTUNA_METADATA,
    Column("trial_id", Integer, primary_key=True),
    Column("study_id", Integer),
    Column("state", String(8)),
)
# one row per trial that ever beat (unique trial_id), refreshed by the worker's heartbeat thread
OPTUNA_HEARTBEATS = Table(
    "trial_heartbeats",
    _OPTUNA_METADATA,
    Column("trial_heartbeat_id", Integer, primary_key=True),
    Column("trial_id", Integer),
    Column("heartbeat", DateTime),
)
# ':' is outside regtune's name pattern, so a pending name never equals a study's name
PENDING_PREFIX = "regtune:submit:"


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


def pending_name(now: float | None = None) -> str:
    """A fresh pending study name carrying its creation time (whole seconds, UTC epoch)."""
    return f"{PENDING_PREFIX}{int(time.time() if now is None else now)}:{secrets.token_hex(8)}"


def rename_study(session: Session, study_id: int, pending: str, name: str) -> bool:
    """Give the pending Optuna study `study_id` its real `name`, in the session's transaction.

    Returns False when no such pending study exists any more (the sweep deleted it). Raises
    IntegrityError when an Optuna study already has `name`.
    """
    result = session.execute(
        update(OPTUNA_STUDIES)
        .where(OPTUNA_STUDIES.c.study_id == study_id, OPTUNA_STUDIES.c.study_name == pending)
        .values(study_name=name)
    )
    session.flush()
    return bool(getattr(result, "rowcount", 0))


def pending_submissions(session: Session, older_than_s: float) -> Sequence[int]:
    """Ids of pending Optuna studies created more than `older_than_s` seconds ago.

    A submission that died (or lost its race without cleaning up) leaves one behind.
    """
    rows = session.execute(
        select(OPTUNA_STUDIES.c.study_id, OPTUNA_STUDIES.c.study_name).where(
            OPTUNA_STUDIES.c.study_name.like(f"{PENDING_PREFIX}%")
        )
    ).all()
    cutoff = time.time() - older_than_s
    stale = []
    for study_id, name in rows:
        stamp = name[len(PENDING_PREFIX) :].split(":", 1)[0]
        if not stamp.isdigit() or int(stamp) <= cutoff:
            stale.append(int(study_id))
    return stale
