"""Many workers on one study: exact budgets on PostgreSQL, no lock errors on SQLite."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from service.migrations import upgrade
from service.models import StudyStatus, TrialState
from tests.reliability._processes import REPO, env_for, stop, stop_all
from tests.support import free_port, tiny_spec, wait_healthy
from tests.worker.conftest import Db, insert_study, worker_process

pytestmark = pytest.mark.slow


@pytest.mark.postgres
def test_four_workers_finish_exactly_n_trials_on_postgresql(pg_url: str) -> None:
    upgrade(pg_url)
    study_id = insert_study(pg_url, tiny_spec("four", n_trials=10))
    workers = [
        worker_process(pg_url, "--study", str(study_id), "--exit-when-idle") for _ in range(4)
    ]
    try:
        assert [w.wait(300) for w in workers] == [0] * 4
    finally:
        stop_all(workers)
    db = Db(pg_url)
    trials = db.trials(study_id)
    assert sum(TrialState(t.state).is_finished for t in trials) == 10
    assert sorted(t.slot for t in trials if t.slot is not None) == list(range(10))
    assert len({t.worker for t in trials}) >= 2  # they really shared the study
    assert db.study(study_id).status == StudyStatus.completed


def test_embedded_serve_with_two_workers_on_sqlite_never_locks(
    sqlite_url: str, tmp_path: Path
) -> None:
    port = free_port()
    log = (tmp_path / "serve.log").open("wb")  # a file, not a pipe: a full pipe blocks the server
    base = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "serve", "--port", str(port), "--workers", "2"],
        # a generous grace period, as in production: two busy cores can delay a heartbeat by
        # seconds, and a false "stale" verdict fails a live trial
        env=env_for(sqlite_url, REGTUNE_HEARTBEAT_GRACE_PERIOD="60"),
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_healthy(base, proc)
        ids = []
        with httpx.Client(base_url=base, timeout=60) as http:
            for name in ("a", "b"):
                r = http.post("/api/v1/studies", json=tiny_spec(name, n_trials=6))
                assert r.status_code == 201, r.text
                ids.append(r.json()["id"])
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline:
                # reads while both workers write: must never fail either
                studies = [http.get(f"/api/v1/studies/{i}").json() for i in ids]
                assert http.get(f"/api/v1/studies/{ids[0]}/trials").status_code == 200
                if all(s["status"] == "completed" for s in studies):
                    break
                time.sleep(0.5)
    finally:
        stop(proc)
        log.close()
    output = (tmp_path / "serve.log").read_text()
    assert [s["status"] for s in studies] == ["completed", "completed"], json.dumps(studies)
    assert all(s["progress"]["finished"] == 6 for s in studies)
    assert "database is locked" not in output
    assert "Traceback" not in output
