"""End to end: `regtune serve --workers 1` as a real process on an SQLite file, driven over HTTP."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import serve_process, server_env, tiny_spec

pytestmark = pytest.mark.slow

# TPE and the median pruner, as a user's study would have them, on the tiny synthetic task
SPEC = tiny_spec("e2e", n_trials=4, sampler={"name": "tpe", "seed": 0}, pruner={"name": "median"})


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path, dict[str, str]]]:
    db = tmp_path / "regtune.db"
    env = server_env(f"sqlite:///{db}")
    with serve_process("--workers", "1", env=env, cwd=tmp_path, stop_timeout=60) as running:
        yield running.url, db, dict(env, REGTUNE_SERVER_URL=running.url)
    # the embedded worker went down with the server
    assert running.proc.returncode == 0


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_submit_over_http_runs_to_the_best_result_and_the_sql_view(
    server: tuple[str, Path, dict[str, str]],
) -> None:
    url, db, env = server
    created = httpx.post(f"{url}/api/v1/studies", json=SPEC, timeout=10)
    assert created.status_code == 201, created.text
    study_id = created.json()["id"]

    deadline = time.monotonic() + 120
    while True:
        study = httpx.get(f"{url}/api/v1/studies/{study_id}", timeout=10).json()
        if study["status"] not in ("queued", "running"):
            break
        assert time.monotonic() < deadline, f"study stuck: {study}"
        time.sleep(0.3)
    assert study["status"] == "completed"
    assert study["progress"]["finished"] == 4

    best = httpx.get(f"{url}/api/v1/studies/{study_id}/best", timeout=10).json()
    assert best["final"] is True
    assert best["params"]["batch_size"] in (16, 32)

    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT trial, state, dropout, value FROM regtune_trial_results WHERE study = 'e2e'"
        ).fetchall()
    assert len(rows) == 4
    values = [r[3] for r in rows if r[1] == "complete"]
    assert best["value"] == pytest.approx(min(values))

    # the CLI reads the same results
    status = _cli(env, "status", str(study_id), "--format", "json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["status"] == "completed"
    text = _cli(env, "best", str(study_id))
    assert text.returncode == 0, text.stderr
    assert "dropout" in text.stdout and f"trial {best['trial_number']}" in text.stdout
