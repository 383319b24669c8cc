"""Engine and session factory shared by the API, workers and CLI.

SQLite runs in WAL mode with a busy timeout (several processes share the file); PostgreSQL
connections are pre-pinged (idle connections drop during long trials, optuna#5600).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

SQLITE_BUSY_TIMEOUT_MS = 30_000


def normalize_url(url: str) -> str:
    """Use psycopg (3) for plain ``postgresql://`` URLs."""
    if url.startswith("postgresql://"):
        return "postgresql+psycopg://" + url[len("postgresql://") :]
    if url.startswith("postgres://"):
        return "postgresql+psycopg://" + url[len("postgres://") :]
    return url


def engine_kwargs(url: str) -> dict[str, Any]:
    """Keyword arguments for `create_engine` (also given to Optuna's RDBStorage)."""
    if url.startswith("sqlite"):
        return {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}}
    return {"pool_pre_ping": True}


# Every regtune engine on SQLite: WAL (readers never block the writer), the busy timeout
# (several processes share the file), and enforced foreign keys.
SQLITE_PRAGMAS: Mapping[str, str | int] = {
    "journal_mode": "WAL",
    "busy_timeout": SQLITE_BUSY_TIMEOUT_MS,
    "foreign_keys": "ON",
}
# Worker engines (regtune's and Optuna's) add ``synchronous=NORMAL``: a commit no longer waits for
# fsync. Workers commit once per epoch (plus Optuna's own report); with NORMAL the database stays
# consistent on a crash and only the last commits may be lost on power failure, which costs at
# most a re-run epoch.
SQLITE_WORKER_PRAGMAS: Mapping[str, str | int] = {"synchronous": "NORMAL"}


def install_sqlite_pragmas(
    engine: Engine, pragmas: Mapping[str, str | int] = SQLITE_PRAGMAS
) -> None:
    """The one SQLite connect listener: ``PRAGMA name=value`` for each of `pragmas` on every
    new connection of `engine`; PostgreSQL engines are left alone. Connections opened before
    are closed, so they get the pragmas when reopened."""
    if engine.dialect.name != "sqlite":
        return
    statements = [f"PRAGMA {name}={value}" for name, value in pragmas.items()]

    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        for statement in statements:
            cur.execute(statement)
        cur.close()

    event.listen(engine, "connect", _on_connect)
    engine.dispose()


def make_engine(url: str, *, worker: bool = False) -> Engine:
    """An engine on `url` with regtune's SQLite pragmas (`worker`: also the worker ones)."""
    url = normalize_url(url)
    engine = create_engine(url, **engine_kwargs(url))
    pragmas = {**SQLITE_PRAGMAS, **SQLITE_WORKER_PRAGMAS} if worker else SQLITE_PRAGMAS
    install_sqlite_pragmas(engine, pragmas)
    return engine


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def unit_of_work(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One transaction: commit at the end, roll back on error. Helpers inside only flush()."""
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
