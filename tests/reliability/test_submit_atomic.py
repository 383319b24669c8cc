"""Submitting is atomic: a study (row, Optuna study, enqueued trials) exists whole or not at all.

Real `regtune serve` processes on SQLite and PostgreSQL: one SIGKILLed in the middle of a
100-point warm-start submission, and concurrent submissions of one name racing each other.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import optuna
import pytest
from sqlalchemy import func, select, text

from service.db import make_engine, normalize_url
from service.migrations import upgrade
from service.studies.optuna_storage import OPTUNA_STUDIES, OPTUNA_TRIALS, PENDING_PREFIX
from service.worker import stale
from tests.reliability._processes import regtune, server, stop
from tests.support import free_port, settings_for, sweep_once, tiny_spec, wait_healthy
from tests.worker.conftest import wait_for

pytestmark = pytest.mark.slow


def _points(first: int, n: int) -> list[dict[str, Any]]:
    """`n` warm-start points of `tiny_spec`'s space, told apart by their dropout."""
    return [
        {"dropout": (first + i) / 1000, "weight_decay": 1e-4, "batch_size": 16} for i in range(n)
    ]


def _optuna_trials(url: str) -> int:
    """Trials of every Optuna study in the database (pending ones included)."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.scalar(select(func.count()).select_from(OPTUNA_TRIALS)) or 0)
    finally:
        engine.dispose()


STALL_AFTER = 10  # warm-start trials that commit before the submission stalls
_STALL_LOCK = 7219  # PostgreSQL advisory lock key the stalled insert waits on


@contextmanager
def _stall_enqueue_after(url: str, n: int) -> Iterator[None]:
    """Make the server's `n + 1`-th Optuna trial insert hang, so a kill lands mid-submission.

    A trigger on Optuna's `trials` table, not a sleep in the test: the first `n` warm-start
    trials commit, the next one waits (PostgreSQL: on an advisory lock this connection holds;
    SQLite, whose triggers cannot wait: a 600-row three-way cross join, about 20 s of CPU on
    the insert against the test's 0.1 s poll). On exit the stalled backends are ended and the
    trigger is dropped, so what follows runs on the plain schema.
    """
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            if engine.dialect.name == "postgresql":
                conn.execute(text(f"SELECT pg_advisory_lock({_STALL_LOCK})"))
                conn.execute(
                    text(
                        "CREATE FUNCTION stall() RETURNS trigger AS $$ BEGIN "
                        f"IF (SELECT count(*) FROM trials) >= {n} THEN "
                        f"PERFORM pg_advisory_xact_lock({_STALL_LOCK}); END IF; "
                        "RETURN NEW; END $$ LANGUAGE plpgsql"
                    )
                )
                conn.execute(
                    text(
                        "CREATE TRIGGER stall BEFORE INSERT ON trials "
                        "FOR EACH ROW EXECUTE FUNCTION stall()"
                    )
                )
            else:
                conn.execute(text("CREATE TABLE stall_rows (x INTEGER)"))
                conn.execute(
                    text(
                        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c "
                        "WHERE x < 600) INSERT INTO stall_rows SELECT x FROM c"
                    )
                )
                conn.execute(
                    text(
                        f"CREATE TRIGGER stall BEFORE INSERT ON trials "
                        f"WHEN (SELECT count(*) FROM trials) >= {n} BEGIN "
                        "SELECT count(*) FROM stall_rows a, stall_rows b, stall_rows c "
                        "WHERE a.x + b.x + c.x < 0; END"
                    )
                )
            conn.commit()
            try:
                yield
            finally:
                if engine.dialect.name == "postgresql":
                    conn.execute(
                        text(
                            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                        )
                    )
                    conn.execute(text(f"SELECT pg_advisory_unlock({_STALL_LOCK})"))
                    conn.execute(text("DROP TRIGGER stall ON trials"))
                    conn.execute(text("DROP FUNCTION stall()"))
                else:
                    conn.execute(text("DROP TRIGGER stall"))
                    conn.execute(text("DROP TABLE stall_rows"))
                conn.commit()
    finally:
        engine.dispose()


def _optuna_studies(url: str) -> dict[str, list[optuna.trial.FrozenTrial]]:
    storage = optuna.storages.RDBStorage(normalize_url(url), skip_table_creation=True)
    try:
        return {
            s.study_name: storage.get_all_trials(s._study_id) for s in storage.get_all_studies()
        }
    finally:
        storage.engine.dispose()


def _dropouts(trials: list[optuna.trial.FrozenTrial]) -> list[float]:
    return sorted(t.system_attrs["fixed_params"]["dropout"] for t in trials)


def test_sigkill_mid_submission_leaves_nothing_and_the_name_free(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    upgrade(db_url)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    spec = tiny_spec("warm", enqueue=_points(0, 100))
    answers: list[int | str] = []

    def submit() -> None:
        try:
            answers.append(httpx.post(f"{base}/api/v1/studies", json=spec, timeout=60).status_code)
        except httpx.TransportError:
            answers.append("lost")

    proc = regtune(db_url, "serve", "--port", str(port), "--workers", "0")
    try:
        with _stall_enqueue_after(db_url, STALL_AFTER):
            wait_healthy(base, proc)
            client = threading.Thread(target=submit)
            client.start()
            # mid-submission: 10 of the 100 warm-start trials are in Optuna's tables, the
            # 11th is being inserted
            wait_for(
                lambda: _optuna_trials(db_url) >= STALL_AFTER or not client.is_alive(),
                60,
                "enqueue",
            )
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
            client.join(60)
    finally:
        stop(proc)
    assert answers == ["lost"], "the submission ended before the kill: nothing was tested"
    assert _optuna_trials(db_url) == STALL_AFTER
    # none of the study exists: no Optuna study by that name (only a pending one)
    left = _optuna_studies(db_url)
    assert "warm" not in left and all(n.startswith(PENDING_PREFIX) for n in left), left

    restart = regtune(db_url, "serve", "--port", str(port), "--workers", "0")
    try:
        wait_healthy(base, restart)
        assert httpx.get(f"{base}/api/v1/studies/warm").status_code == 404
        again = tiny_spec("warm", enqueue=_points(400, 3))
        r = httpx.post(f"{base}/api/v1/studies", json=again, timeout=60)
        assert r.status_code == 201, r.text
    finally:
        stop(restart)
    studies = _optuna_studies(db_url)
    assert _dropouts(studies["warm"]) == [0.4, 0.401, 0.402]
    assert {t.state for t in studies["warm"]} == {optuna.trial.TrialState.WAITING}

    # the sweep deletes the dead submission's pending study (here: without waiting its hour)
    monkeypatch.setattr(stale, "PENDING_SUBMISSION_TTL_S", 0.0)
    sweep_once(db_url, settings_for(db_url))
    after = _optuna_studies(db_url)
    assert list(after) == ["warm"] and len(after["warm"]) == 3


SUBMITTERS = 6
POINTS = 20


def test_concurrent_submissions_of_one_name_one_wins_with_only_its_trials(db_url: str) -> None:
    upgrade(db_url)
    barrier = threading.Barrier(SUBMITTERS)
    answers: dict[int, httpx.Response] = {}

    with server(db_url) as base:

        def submit(i: int) -> None:
            spec = tiny_spec("race", enqueue=_points(i * POINTS, POINTS))
            with httpx.Client(base_url=base, timeout=120) as http:
                barrier.wait()
                answers[i] = http.post("/api/v1/studies", json=spec)

        threads = [threading.Thread(target=submit, args=(i,)) for i in range(SUBMITTERS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(180)
        listed = httpx.get(f"{base}/api/v1/studies").json()

    codes = sorted(r.status_code for r in answers.values())
    assert codes == [201] + [409] * (SUBMITTERS - 1), {i: r.text for i, r in answers.items()}
    for r in answers.values():
        if r.status_code == 409:
            assert r.json()["detail"][0]["msg"] == "a study named 'race' already exists"
    (winner,) = [i for i, r in answers.items() if r.status_code == 201]
    studies = _optuna_studies(db_url)
    # the losers deleted their pending studies; the winner's study holds its own points only
    assert list(studies) == ["race"]
    assert _dropouts(studies["race"]) == [p["dropout"] for p in _points(winner * POINTS, POINTS)]
    assert listed["total"] == 1


def test_max_queued_studies_answers_429_naming_the_limit(sqlite_url: str) -> None:
    upgrade(sqlite_url)
    with (
        server(sqlite_url, REGTUNE_MAX_QUEUED_STUDIES="2") as base,
        httpx.Client(base_url=base, timeout=60) as http,
    ):
        assert http.post("/api/v1/studies", json=tiny_spec("a")).status_code == 201
        assert http.post("/api/v1/studies", json=tiny_spec("b")).status_code == 201
        r = http.post("/api/v1/studies", json=tiny_spec("c"))
        assert r.status_code == 429, r.text
        (detail,) = r.json()["detail"]
        assert detail["type"] == "too_many_requests"
        assert "REGTUNE_MAX_QUEUED_STUDIES" in detail["msg"] and "limit is 2" in detail["msg"]
        # nothing of the refused study was stored
        assert http.get("/api/v1/studies/c").status_code == 404
        assert "c" not in _optuna_studies(sqlite_url)
        # a cancelled study no longer counts
        assert http.post("/api/v1/studies/a/cancel", json={}).status_code == 200
        assert http.post("/api/v1/studies", json=tiny_spec("c")).status_code == 201


def test_pending_studies_are_swept_only_once_old(migrated_db_url: str) -> None:
    """A live submission's pending study is left alone; a dead one's is deleted."""
    from service.studies.optuna_storage import pending_name

    storage = optuna.storages.RDBStorage(normalize_url(migrated_db_url), skip_table_creation=True)
    try:
        fresh = storage.create_new_study([optuna.study.StudyDirection.MINIMIZE], pending_name())
        old = pending_name(now=0)
        storage.create_new_study([optuna.study.StudyDirection.MINIMIZE], old)
    finally:
        storage.engine.dispose()
    sweep_once(migrated_db_url, settings_for(migrated_db_url))
    engine = make_engine(migrated_db_url)
    try:
        with engine.connect() as conn:
            ids = list(conn.scalars(select(OPTUNA_STUDIES.c.study_id)))
    finally:
        engine.dispose()
    assert ids == [fresh]
