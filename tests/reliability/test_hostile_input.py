"""Hostile input: trainer names are registry keys, never imports; schemathesis over the real API."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.api import create_app
from service.auth import TokenScope, create_token
from service.config import Settings
from service.db import make_engine, make_session_factory, unit_of_work
from service.migrations import upgrade
from tests.api.conftest import run_worker_until_idle
from tests.reliability._processes import REPO, server
from tests.support import tiny_spec

CANARY = "tests.reliability.canary"


@pytest.mark.parametrize(
    "trainer",
    [
        "os:system",
        "os.system",
        "trainers.builtin",
        "trainers.builtin:SYNTHETIC_MLP",
        CANARY,
        f"{CANARY}:TRAINER",
        "__import__('os').system('true')",
    ],
)
def test_a_trainer_name_is_looked_up_never_imported(sqlite_url: str, trainer: str) -> None:
    upgrade(sqlite_url)
    sys.modules.pop(CANARY, None)
    with TestClient(create_app(Settings(database_url=sqlite_url, auto_migrate=False))) as c:
        before = set(sys.modules)  # the registered plugins are loaded by now
        r = c.post("/api/v1/studies", json=tiny_spec("hostile", trainer=trainer))
        new_modules = set(sys.modules) - before
    assert r.status_code == 422
    (detail,) = r.json()["detail"]
    assert detail["loc"] == ["body", "trainer"]
    assert detail["msg"].startswith(f"trainer: unknown trainer {trainer!r}; registered trainers:")
    assert CANARY not in sys.modules
    assert not {m for m in new_modules if m.split(".")[0] in ("os", "trainers", "tests")}


def _token(url: str) -> str:
    engine = make_engine(url)
    with unit_of_work(make_session_factory(engine)) as session:
        _, secret = create_token(session, "schemathesis", TokenScope.write)
    engine.dispose()
    return secret


@pytest.mark.slow
def test_schemathesis_finds_no_server_error_and_no_schema_violation(
    sqlite_url: str, tmp_path: Path
) -> None:
    """>= 1000 generated requests over every operation of /openapi.json, auth on, write token.

    Checks: everything except `positive_data_acceptance` (the schema cannot express the
    semantic rules a valid spec must also meet, e.g. a *registered* trainer, low < high) and
    `allow_header_conformance` (Starlette answers a 405 with the methods of the first route
    matching the path, not all of them).
    """
    upgrade(sqlite_url)
    token = _token(sqlite_url)
    # a finished study with trials and epochs, so reads reach real data, not only 404s
    with TestClient(create_app(Settings(database_url=sqlite_url, auto_migrate=False))) as c:
        created = c.post(
            "/api/v1/studies",
            json=tiny_spec("seed", n_trials=2),
            headers={"Authorization": f"Bearer {token}"},
        )
    run_worker_until_idle(sqlite_url, created.json()["id"])

    report = tmp_path / "report"
    with server(sqlite_url, REGTUNE_AUTH="on") as base:
        run = subprocess.run(
            [
                str(Path(sys.executable).parent / "st"),
                "run",
                f"{base}/openapi.json",
                "--header",
                f"Authorization: Bearer {token}",
                "--checks",
                "all",
                "--exclude-checks",
                "positive_data_acceptance,allow_header_conformance",
                "--max-examples",
                "60",
                "--seed",
                "20261122",
                # one worker: with two threads, hypothesis' lambda-source parsing (ast.parse) can
                # race inside CPython 3.11 ("AST constructor recursion depth mismatch")
                "--workers",
                "1",
                "--request-timeout",
                "60",
                "--no-color",
                "--report",
                "json",
                "--report-dir",
                str(report),
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=600,
        )
    reports = list(report.glob("*.json"))
    assert len(reports) == 1, run.stdout[-6000:] + run.stderr[-3000:]
    result = json.loads(reports[0].read_text())
    assert result["failures"] == [] and result["errors"] == [], run.stdout[-6000:]
    assert run.returncode == 0, run.stdout[-6000:]
    assert result["operations"]["tested"] == result["operations"]["total"] >= 10
    assert result["test_cases"]["generated"] >= 1000
