"""The API killed with SIGKILL while 50 clients submit: nothing acknowledged is lost or torn."""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter

import httpx
import optuna
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.config import Settings
from service.db import normalize_url
from service.migrations import upgrade
from service.studies.optuna_storage import PENDING_PREFIX
from tests.reliability._processes import regtune, stop
from tests.support import free_port, tiny_spec, wait_healthy

CLIENTS = 50


def _optuna_names(url: str) -> set[str]:
    """Names of the Optuna studies, without the pending ones of submissions the kill cut short
    (they block no name; the sweep deletes them, tests/reliability/test_submit_atomic.py)."""
    storage = optuna.storages.RDBStorage(normalize_url(url), skip_table_creation=True)
    try:
        names = {s.study_name for s in storage.get_all_studies()}
    finally:
        storage.engine.dispose()
    return {n for n in names if not n.startswith(PENDING_PREFIX)}


@pytest.mark.slow
@pytest.mark.postgres
def test_sigkill_during_50_concurrent_submissions_loses_nothing(pg_url: str) -> None:
    upgrade(pg_url)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = regtune(pg_url, "serve", "--port", str(port), "--workers", "0")
    outcomes: dict[str, int | str] = {}  # name -> status code, or "lost" (no answer)
    lock = threading.Lock()
    stop_clients = threading.Event()

    def client(n: int) -> None:
        with httpx.Client(base_url=base, timeout=30) as http:
            for i in range(1000):
                if stop_clients.is_set():
                    return
                name = f"crash-{n}-{i}"
                try:
                    code: int | str = http.post("/api/v1/studies", json=tiny_spec(name)).status_code
                except httpx.TransportError:
                    code = "lost"
                with lock:
                    outcomes[name] = code
                if code == "lost":
                    return

    def accepted() -> int:
        with lock:
            return sum(1 for c in outcomes.values() if c == 201)

    try:
        wait_healthy(base, proc)
        threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 120
        while accepted() < 100 and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)  # mid-flight: 50 requests are in progress
        proc.wait(30)
        stop_clients.set()
        for t in threads:
            t.join(60)
    finally:
        stop(proc)

    counts = Counter(outcomes.values())
    assert counts[201] >= 100 and counts["lost"] >= 1, counts
    assert set(counts) <= {201, "lost"}, counts  # no 5xx before the kill

    # every acknowledged study survived the crash, with its Optuna study
    optuna_names = _optuna_names(pg_url)
    acknowledged = {n for n, c in outcomes.items() if c == 201}
    assert acknowledged <= optuna_names
    restart = regtune(pg_url, "serve", "--port", str(port), "--workers", "0")
    try:
        wait_healthy(base, restart)
        with httpx.Client(base_url=base, timeout=30) as http:
            for name in acknowledged:
                r = http.get(f"/api/v1/studies/{name}")
                assert r.status_code == 200 and r.json()["status"] == "queued", name
            # a request that never got an answer may or may not have been stored; either way
            # resubmitting it succeeds or says it exists, and never leaves it half-written
            for name in sorted(n for n, c in outcomes.items() if c == "lost"):
                r = http.post("/api/v1/studies", json=tiny_spec(name))
                assert r.status_code in (201, 409), (name, r.text)
                if r.status_code == 409:
                    assert "a study named" in r.json()["detail"][0]["msg"], r.text
                assert http.get(f"/api/v1/studies/{name}").status_code == 200
            total = http.get("/api/v1/studies", params={"limit": 1}).json()["total"]
    finally:
        stop(restart)
    # regtune's rows and Optuna's studies are the same set: no orphan on either side
    assert total == len(outcomes) == len(_optuna_names(pg_url))


def test_an_orphaned_optuna_study_is_reclaimed_by_the_next_submission(
    migrated_db_url: str,
) -> None:
    """What a crash between creating the Optuna study and storing the row leaves behind."""
    storage_url = normalize_url(migrated_db_url)
    optuna.create_study(study_name="orphan", storage=storage_url, direction="minimize")
    optuna.create_study(study_name="maximized", storage=storage_url, direction="maximize")
    settings = Settings(database_url=migrated_db_url, auto_migrate=False)
    with TestClient(create_app(settings)) as c:
        r = c.post("/api/v1/studies", json=tiny_spec("orphan"))
        assert r.status_code == 201, r.text
        # an empty study of the other direction is not silently repurposed
        r = c.post("/api/v1/studies", json=tiny_spec("maximized"))
        assert r.status_code == 409
        assert "Optuna study named 'maximized'" in r.json()["detail"][0]["msg"]
    loaded = optuna.load_study(study_name="orphan", storage=storage_url)
    assert loaded.direction == optuna.study.StudyDirection.MINIMIZE
