"""API read latency on a big database: p50/p95/p99 of the study list, detail, trials and best.

Data (PostgreSQL, a uniquely named database created, migrated and dropped by the script):
1,000 studies, one of which has 10,000 finished trials (80 % complete, 20 % pruned). Rows are
inserted directly into ``regtune_studies`` and ``regtune_trials``, shaped like the rows a worker
writes (slot, Optuna number and trial id, the six parameters, value, best epoch, epochs run,
the best epoch's metric columns and their JSON, test metrics, timestamps, the study's progress
counters and best value). No Optuna trials are created: the measured endpoints read only the
regtune tables (they never open Optuna's storage), so the Optuna rows would not change them.

Load: a real ``regtune serve`` (uvicorn, API only) on a free loopback port, and ``--threads``
client threads (httpx, one client each) that send requests round-robin over the four endpoint
kinds until ``--requests`` requests are done or ``--seconds`` have passed:

- list: ``GET /api/v1/studies?limit=50&offset=<random page>``
- detail: ``GET /api/v1/studies/<big study>``
- trials: ``GET /api/v1/studies/<big study>/trials?limit=100&offset=<random>&sort=<number|-value>``
- best: ``GET /api/v1/studies/<big study>/best``

CPU per request: before the load, the same app is called in this process as ASGI (no client,
no sockets, no uvicorn) ``--cpu-requests`` times per endpoint kind, three rounds, and the median
``time.process_time()`` per request is printed. It counts the API's own work (middleware, routing,
dependencies and their threadpool hops, SQLAlchemy and the driver, building and serializing the
response) and not PostgreSQL's: a figure that machine load moves much less than wall-clock
latency, for comparing two versions of the code on a shared machine.

After inserting, the script runs ``VACUUM ANALYZE`` on the two tables, as PostgreSQL's
autovacuum does on a normal server after this many inserts (PostgreSQL 13+ vacuums a table
after 1,000 + 20 % inserted rows; a test server may run with autovacuum off). Without it the
visibility map is empty and every ``count(*)`` of a trials page reads the study's heap rows
instead of an index-only scan. ``--no-vacuum`` skips it (a database autovacuum has not reached).

Targets: p95 < 100 ms for trials pages, < 50 ms for the list. Headline: p95 of the trials page /
100 ms. With ``--compare-revision REV`` the same load also runs against a second database
migrated only up to REV (e.g. the revision before the index migration), alternating the two.

    python bench/api_latency.py            # 4 threads, 4,000 requests (120 s cap)
    python bench/api_latency.py --short    # 4 threads, 800 requests (60 s cap) (make bench)
    python bench/api_latency.py --cpu-only # CPU per request only, no HTTP load
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import _common
import httpx
from sqlalchemy import insert, text

from service import migrations
from service.app import create_app
from service.config import Settings
from service.db import make_engine
from service.models import StudyRecord, TrialRecord

N_STUDIES = 1_000
N_TRIALS = 10_000
KINDS = ("list", "detail", "trials", "best")
REGTUNE = str(Path(sys.executable).with_name("regtune"))
SPEC: dict[str, Any] = {
    "trainer": "digits-mlp",
    "trainer_config": {"max_epochs": 30},
    "objective": {"metric": "val_loss", "direction": "minimize"},
    "sampler": {"name": "tpe", "seed": 0},
    "pruner": {"name": "hyperband"},
}


def populate(url: str, n_studies: int = N_STUDIES, n_trials: int = N_TRIALS) -> int:
    """Insert the studies and the big study's trials; the big study's id."""
    rng = random.Random(0)
    t0 = datetime(2026, 1, 1)
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            studies = []
            for i in range(n_studies):
                big = i == 0
                n = n_trials if big else rng.randint(0, 20)
                complete = int(n * 0.8)
                studies.append(
                    {
                        "name": f"study-{i:05d}",
                        "trainer": "digits-mlp",
                        "spec": {**SPEC, "name": f"study-{i:05d}", "budget": {"n_trials": n}},
                        "status": "completed" if n else "queued",
                        "metric": "val_loss",
                        "direction": "minimize",
                        "n_trials": max(n, 1),
                        "n_complete": complete,
                        "n_pruned": n - complete,
                        "n_failed": 0,
                        "n_running": 0,
                        "consecutive_failures": 0,
                        "best_value": 0.1 if complete else None,
                        "best_trial_number": 0 if complete else None,
                        "created_at": t0 + timedelta(minutes=i),
                        "updated_at": t0 + timedelta(minutes=i),
                    }
                )
            conn.execute(insert(StudyRecord), studies)
            big_id = (
                conn.execute(
                    StudyRecord.__table__.select().where(StudyRecord.name == "study-00000")
                )
                .one()
                .id
            )
            rows = [_trial_row(big_id, k, rng, t0) for k in range(n_trials)]
            for start in range(0, len(rows), 2_000):
                conn.execute(insert(TrialRecord), rows[start : start + 2_000])
        return int(big_id)
    finally:
        engine.dispose()


def _trial_row(study_id: int, k: int, rng: random.Random, t0: datetime) -> dict[str, Any]:
    pruned = k % 5 == 4
    epochs = rng.randint(1, 5) if pruned else rng.randint(5, 30)
    value = rng.uniform(0.1, 2.0)
    metrics = {
        "train_loss": value * 0.8,
        "val_loss": value,
        "val_acc": rng.uniform(0.5, 1.0),
        "val_ece": rng.uniform(0.0, 0.2),
        "gap": rng.uniform(0.0, 0.5),
        "train_eval_loss": value * 0.7,
        "train_acc": rng.uniform(0.5, 1.0),
        "near_zero_frac": rng.uniform(0.0, 0.1),
    }
    started = t0 + timedelta(seconds=10 * k)
    return {
        "study_id": study_id,
        "slot": k,
        "number": k,
        "optuna_trial_id": k + 1,
        "state": "pruned" if pruned else "complete",
        "worker": "bench-worker",
        "weight_decay": 10 ** rng.uniform(-6, -1),
        "l1": 0.0,
        "dropout": rng.uniform(0, 0.7),
        "label_smoothing": rng.uniform(0, 0.3),
        "batch_size": rng.choice([32, 64, 128, 256]),
        "patience": rng.randint(2, 10),
        "value": value,
        "best_epoch": epochs - 1,
        "epochs_run": epochs,
        "metrics": metrics,
        **{c: metrics[c] for c in ("train_loss", "val_loss", "val_acc", "val_ece", "gap")},
        "test_metrics": None if pruned else {"test_loss": value, "test_acc": 0.9},
        "claimed_at": started,
        "started_at": started,
        "finished_at": started + timedelta(seconds=9),
        "duration_s": 9.0,
    }


# The trials-page queries as the repository issues them (sort number / value / -value, trials
# without a value last), timed inside PostgreSQL with EXPLAIN ANALYZE: the database's share of
# a request, without the HTTP and serialization costs that machine load inflates.
PAGE_QUERIES = {
    "sort=number": "ORDER BY number ASC",
    "sort=value": "ORDER BY (value IS NULL), value ASC, number ASC",
    "sort=-value": "ORDER BY (value IS NULL), value DESC, number ASC",
}


def vacuum(url: str) -> None:
    """``VACUUM ANALYZE`` the tables the endpoints read (what autovacuum does after the inserts)."""
    engine = make_engine(url).execution_options(isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            for table in ("regtune_studies", "regtune_trials"):
                conn.execute(text(f"VACUUM ANALYZE {table}"))
    finally:
        engine.dispose()


def db_times(url: str, study_id: int, repeats: int = 5) -> dict[str, float]:
    """Median server-side execution time (ms) of each page query at offset 5,000."""
    engine = make_engine(url)
    out: dict[str, float] = {}
    try:
        with engine.connect() as conn:
            conn.execute(text("ANALYZE regtune_trials"))
            for label, order in PAGE_QUERIES.items():
                sql = text(
                    "EXPLAIN (ANALYZE, FORMAT JSON) SELECT * FROM regtune_trials "
                    f"WHERE study_id = :sid AND number IS NOT NULL {order} LIMIT 100 OFFSET 5000"
                )
                times = [
                    float(conn.execute(sql, {"sid": study_id}).scalar_one()[0]["Execution Time"])
                    for _ in range(repeats)
                ]
                out[label] = _common.median(times)
    finally:
        engine.dispose()
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def server(url: str) -> Iterator[str]:
    """`regtune serve` (API only) on a free loopback port; its base URL."""
    port = free_port()
    env = {**os.environ, "REGTUNE_DATABASE_URL": url, "TZ": "UTC", "REGTUNE_AUTH": "off"}
    proc = subprocess.Popen(
        [REGTUNE, "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "0"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"regtune serve did not start (exit {proc.poll()})")
            time.sleep(0.3)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def request_path(kind: str, study_id: int, rng: random.Random) -> str:
    """The path (with query) of one request of `kind`."""
    if kind == "list":
        return f"/api/v1/studies?limit=50&offset={50 * rng.randrange(N_STUDIES // 50)}"
    if kind == "detail":
        return f"/api/v1/studies/{study_id}"
    if kind == "trials":
        sort = rng.choice(["number", "-value"])
        offset = 100 * rng.randrange(N_TRIALS // 100)
        return f"/api/v1/studies/{study_id}/trials?limit=100&offset={offset}&sort={sort}"
    if kind == "best":
        return f"/api/v1/studies/{study_id}/best"
    raise ValueError(kind)


# what httpx sends to a local `regtune serve` (the API answers only its allowed Host names)
ASGI_HOST = "127.0.0.1:8000"


async def asgi_get(app: Any, path: str) -> tuple[int, bytes]:
    """Send `GET path` straight to the ASGI `app` (no client, no socket): status code and body.

    The request carries what a local HTTP client sends (``Host: 127.0.0.1:8000``), so the
    app's Host check passes as it does for the load phase's real requests.
    """
    route, _, query = path.partition("?")
    host, _, port = ASGI_HOST.partition(":")
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": route,
        "raw_path": route.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": [(b"host", ASGI_HOST.encode()), (b"accept", b"*/*")],
        "client": ("127.0.0.1", 1),
        "server": (host, int(port)),
    }
    status = 0
    body: list[bytes] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = int(message["status"])
        elif message["type"] == "http.response.body":
            body.append(message.get("body", b""))

    await app(scope, receive, send)
    return status, b"".join(body)


def cpu_per_request(url: str, study_id: int, requests: int, rounds: int = 3) -> dict[str, float]:
    """Median CPU time (ms) of this process per request of each kind, the app called in-process.

    The real app (lifespan included, auth off) called as ASGI in this process, so
    `time.process_time()` (every thread: event loop and threadpool) measures the API's CPU.
    """
    app = create_app(Settings(database_url=url, auth="off", auto_migrate=False))
    per_round: dict[str, list[float]] = {k: [] for k in KINDS}

    async def run() -> None:
        async with app.router.lifespan_context(app):
            rng = random.Random(1)
            for kind in KINDS * 10:
                path = request_path(kind, study_id, rng)
                status, body = await asgi_get(app, path)
                if status != 200:
                    raise RuntimeError(f"GET {path}: {status} {body[:500]!r}")
            for _ in range(rounds):
                for kind in KINDS:
                    paths = [request_path(kind, study_id, rng) for _ in range(requests)]
                    start = time.process_time()
                    for path in paths:
                        await asgi_get(app, path)
                    per_round[kind].append((time.process_time() - start) / requests * 1000)

    asyncio.run(run())
    return {kind: _common.median(v) for kind, v in per_round.items()}


def load(
    base: str, study_id: int, threads: int, requests: int, seconds: float
) -> dict[str, list[float]]:
    """Concurrent round-robin requests; latencies in ms per endpoint kind."""
    latencies: dict[str, list[float]] = {k: [] for k in KINDS}
    lock = threading.Lock()
    counter = iter(range(requests))
    deadline = time.monotonic() + seconds
    errors: list[str] = []

    def worker(index: int) -> None:
        rng = random.Random(index)
        with httpx.Client(base_url=base, timeout=30) as client:
            while time.monotonic() < deadline:
                with lock:
                    n = next(counter, None)
                if n is None:
                    return
                kind = KINDS[n % len(KINDS)]
                path = request_path(kind, study_id, rng)
                start = time.perf_counter()
                response = client.get(path)
                elapsed = (time.perf_counter() - start) * 1000
                with lock:
                    if response.status_code != 200:
                        errors.append(f"{path}: {response.status_code} {response.text[:200]}")
                    latencies[kind].append(elapsed)

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    if errors:
        raise RuntimeError(f"{len(errors)} requests failed, first: {errors[0]}")
    return latencies


def warm_up(base: str, study_id: int) -> None:
    rng = random.Random(-1)
    with httpx.Client(base_url=base, timeout=30) as client:
        for kind in KINDS * 5:
            client.get(request_path(kind, study_id, rng)).raise_for_status()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", action="store_true", help="800 requests, 60 s cap")
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--requests", type=int, default=None)
    parser.add_argument("--seconds", type=float, default=None)
    parser.add_argument("--compare-revision", default=None, metavar="REV")
    parser.add_argument(
        "--cpu-requests", type=int, default=100, help="per kind and round (0: skip)"
    )
    parser.add_argument("--cpu-only", action="store_true", help="CPU per request, no HTTP load")
    parser.add_argument(
        "--no-vacuum", action="store_true", help="skip VACUUM ANALYZE after inserting the rows"
    )
    args = parser.parse_args()
    requests = args.requests or (800 if args.short else 4_000)
    seconds = args.seconds or (60.0 if args.short else 120.0)
    _common.quiet()

    revisions = ["head"] + ([args.compare_revision] if args.compare_revision else [])
    rows = []
    db_rows: list[list[Any]] = []
    cpu_rows: list[list[Any]] = []
    trials_p95: float | None = None
    for revision in revisions:
        with _common.scratch_postgres("regtune_bench_api") as url:
            migrations.upgrade(url, revision)
            started = time.perf_counter()
            study_id = populate(url)
            if not args.no_vacuum:
                vacuum(url)
            print(
                f"[{revision}] inserted {N_STUDIES} studies and {N_TRIALS} trials in "
                f"{time.perf_counter() - started:.1f}s",
                flush=True,
            )
            for label, ms in db_times(url, study_id).items():
                db_rows.append([revision, label, ms])
            if args.cpu_requests > 0:
                cpu = cpu_per_request(url, study_id, args.cpu_requests)
                cpu_rows.append([revision, *(cpu[k] for k in KINDS)])
                if args.cpu_only:
                    continue
            with server(url) as base:
                warm_up(base, study_id)
                started = time.perf_counter()
                lat = load(base, study_id, args.threads, requests, seconds)
                wall = time.perf_counter() - started
            done = sum(len(v) for v in lat.values())
            print(
                f"[{revision}] {done} requests in {wall:.1f}s ({done / wall:.0f} req/s, "
                f"{args.threads} threads)",
                flush=True,
            )
            for kind in KINDS:
                v = lat[kind]
                p = [_common.percentile(v, q) for q in (50, 95, 99)]
                rows.append([revision, kind, len(v), *p])
                if revision == "head" and kind == "trials":
                    trials_p95 = p[1]
    print("## trials page query inside PostgreSQL (offset 5,000, median of 5, EXPLAIN ANALYZE)")
    print(_common.table(["schema", "query", "execution ms"], db_rows))
    if cpu_rows:
        print(f"## API CPU per request, in-process (ms; median of 3 rounds of {args.cpu_requests})")
        print(_common.table(["schema", *KINDS], cpu_rows))
    if args.cpu_only:
        print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cpus")
        trials_cpu = next(r[1 + KINDS.index("trials")] for r in cpu_rows if r[0] == "head")
        print(_common.ratio_line(trials_cpu / 100.0))
        return
    print("## HTTP latency under load")
    print(_common.table(["schema", "endpoint", "requests", "p50 ms", "p95 ms", "p99 ms"], rows))
    print(
        f"targets: trials p95 < 100 ms, list p95 < 50 ms; load average "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cpus"
    )
    assert trials_p95 is not None
    print(_common.ratio_line(trials_p95 / 100.0))


if __name__ == "__main__":
    main()
