"""Shared fixtures: real databases, isolated per test.

- `sqlite_url`: a fresh SQLite file in the test's tmp dir.
- `pg_url`: a fresh, uniquely named PostgreSQL database, dropped afterwards (`postgres_database`,
  also for module-scoped databases). When the server is unreachable the test is skipped locally
  but FAILS under CI=true.
- `db_url`: parametrized over both backends (the postgres case carries the `postgres` marker).
- `migrated_db_url`: `db_url` with Optuna's schema and regtune's migrations applied.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

os.environ.setdefault("TZ", "UTC")
# Starlette's TestClient sends `Host: testserver`; a real deployment's names are configured the
# same way (tests/reliability/test_hostile_http.py checks the default, loopback-only list).
os.environ.setdefault("REGTUNE_ALLOWED_HOSTS", "localhost,127.0.0.1,::1,testserver")

PG_ADMIN_URL = os.environ.get(
    "REGTUNE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture
def sqlite_url(tmp_path: os.PathLike[str]) -> str:
    return f"sqlite:///{tmp_path}/regtune.db"


@contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh, uniquely named PostgreSQL database; dropped on exit (its connections with it).

    ``DROP DATABASE ... WITH (FORCE)`` also ends the connections a test left open on it, so a
    pool the test forgot to dispose never outlives its test on the server (max_connections is
    100 for the whole suite). Unreachable server: skipped locally, a failure under CI=true.
    """
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        with admin.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # the server is not there
        admin.dispose()
        message = f"PostgreSQL unreachable at {PG_ADMIN_URL}: {exc.__class__.__name__}: {exc}"
        if _in_ci():
            pytest.fail(message)
        pytest.skip(message)
    name = f"regtune_test_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


@pytest.fixture
def pg_url() -> Iterator[str]:
    with postgres_database() as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest) -> str:
    name = "sqlite_url" if request.param == "sqlite" else "pg_url"
    return str(request.getfixturevalue(name))


@pytest.fixture
def migrated_db_url(db_url: str) -> str:
    from service.migrations import upgrade

    upgrade(db_url)
    return db_url


PLUGIN_DIR = Path(__file__).resolve().parent / "plugin_pkg"
PLUGIN_DIST = "regtune-test-plugin"


@pytest.fixture(scope="session")
def test_plugin() -> str:
    """Make sure the tiny plugin distribution is installed in this venv (editable).

    The tests then see it the way a worker sees a team's package: through its entry points.
    `tests/setup_env.py` may install it ahead of time; this installs it when it is missing.
    """
    try:
        dist = importlib.metadata.distribution(PLUGIN_DIST)
        declared = {"test-plugin-pl", "test-plugin-lightning", "insight-cnn"}
        if not declared <= {ep.name for ep in dist.entry_points}:
            # an install older than the pyproject's entry points: reinstall it
            raise importlib.metadata.PackageNotFoundError(PLUGIN_DIST)
    except importlib.metadata.PackageNotFoundError:
        pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "-e", str(PLUGIN_DIR)]
        # Without build isolation pip reuses the venv's setuptools (no download); fall back to
        # an isolated build where that setuptools cannot build it.
        if subprocess.run([*pip, "--no-build-isolation"], check=False).returncode != 0:
            subprocess.run(pip, check=True)
        importlib.invalidate_caches()
    try:
        importlib.import_module("regtune_test_plugin")
    except ImportError:
        # Installed during this run: the editable finder's .pth is only read at start-up.
        sys.path.insert(0, str(PLUGIN_DIR))
    from trainers import available_trainers  # here: most tests never load torch

    available_trainers(refresh=True)
    return PLUGIN_DIST
