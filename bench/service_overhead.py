"""Service overhead: the same 20-trial study, (a) a plain Optuna script, (b) the API + one worker.

(a) calls ``trainers.make_objective`` in this process: ``study.optimize(n_trials=20)`` on an
RDBStorage. (b) POSTs the same spec to a running ``regtune serve --workers 1`` on the same
database URL and waits until the study is ``completed``: slot claims, the per-epoch rows and
status polls, counters, the worker's idle poll and the HTTP round trips are all inside the
measured time. Both sides are warmed up first (imports, first Lightning fit), and runs
alternate a, b, a, b, ... so drift in machine load hits both.

The search space holds only parameters that do not change training time (weight decay, dropout,
label smoothing; batch size and patience fixed, no pruner): both sides do the same work whatever
the sampler picks. The last line is the median of the per-pair ratios b/a: ``ratio: 1.03``.

    python bench/service_overhead.py            # 20 trials x 3 pairs
    python bench/service_overhead.py --short    # 20 smaller trials x 2 pairs
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from datetime import UTC, datetime
from typing import Any

import httpx
import optuna

from service.db import engine_kwargs
from service.migrations import upgrade
from service.spec import StudySpec
from trainers import make_objective

N_TRIALS = 20
# the worker's idle poll; a study waits at most this long for its first trial
POLL_INTERVAL = "0.2"
# how often the client asks whether the study has ended (the end time itself comes from the study)
POLL_CLIENT_S = 1.0


def spec_for(name: str, n_trials: int, n_samples: int, epochs: int) -> dict[str, Any]:
    return {
        "name": name,
        "trainer": "synthetic-mlp",
        "trainer_config": {"max_epochs": epochs, "n_samples": n_samples, "n_features": 20},
        "search_space": {
            "weight_decay": {"low": 1e-6, "high": 1e-1, "log": True},
            "dropout": {"low": 0.0, "high": 0.5},
            "label_smoothing": {"low": 0.0, "high": 0.2},
            "batch_size": {"fixed": 64},
            "patience": {"fixed": 1000},  # every trial runs max_epochs
        },
        "sampler": {"name": "tpe", "seed": 0},
        "pruner": {"name": "none"},
        "budget": {"n_trials": n_trials},
        # the same work as the plain script: no reference run beside the search
        "reference": False,
    }


def run_plain(url: str, spec: dict[str, Any]) -> float:
    """(a): what a user would write with Optuna alone."""
    parsed = StudySpec.model_validate(spec)
    storage = optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs(url))
    study = optuna.create_study(
        study_name=parsed.name,
        storage=storage,
        sampler=optuna.samplers.TPESampler(seed=0),
        pruner=optuna.pruners.NopPruner(),
        direction="minimize",
    )
    objective = make_objective(parsed.objective_spec())
    start = time.perf_counter()
    study.optimize(objective, n_trials=parsed.budget.n_trials)
    elapsed = time.perf_counter() - start
    storage.engine.dispose()
    return elapsed


def run_service(api: str, spec: dict[str, Any]) -> float:
    """(b): submit over HTTP, wait for `completed`; the time from the POST to `finished_at`.

    The end is the study's own `finished_at` (recorded by the worker that finished it, on this
    machine's clock), so the client can poll gently, as real clients do, instead of loading the
    2-core machine with requests that would compete with the training being measured.
    """
    with httpx.Client(base_url=api, timeout=30) as client:
        start = datetime.now(UTC)
        response = client.post("/api/v1/studies", json=spec)
        response.raise_for_status()
        study_id = response.json()["id"]
        while True:
            time.sleep(POLL_CLIENT_S)
            study = client.get(f"/api/v1/studies/{study_id}").json()
            if study["status"] not in ("queued", "running"):
                break
    if study["status"] != "completed":
        raise SystemExit(f"study {spec['name']} ended {study['status']}")
    finished = datetime.fromisoformat(study["finished_at"].replace("Z", "+00:00"))
    return (finished - start).total_seconds()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(url: str) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    env = dict(
        os.environ, TZ="UTC", REGTUNE_DATABASE_URL=url, REGTUNE_WORKER_POLL_INTERVAL=POLL_INTERVAL
    )
    cmd = [sys.executable, "-m", "service.cli", "serve", "--port", str(port), "--workers", "1"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    api = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{api}/healthz", timeout=1).status_code == 200:
                return proc, api
        except httpx.TransportError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("regtune serve did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", action="store_true", help="smaller trials, 2 pairs")
    parser.add_argument("--pairs", type=int, default=None)
    parser.add_argument("--database-url", default=None, help="default: a temporary SQLite file")
    args = parser.parse_args()
    pairs = args.pairs or (2 if args.short else 3)
    n_samples, epochs = (800, 10) if args.short else (2000, 15)
    os.environ.setdefault("TZ", "UTC")
    warnings.filterwarnings("ignore")
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    with tempfile.TemporaryDirectory() as tmp:
        url = args.database_url or f"sqlite:///{tmp}/bench.db"
        upgrade(url)
        proc, api = start_server(url)
        try:
            # warm-up: imports and the first Lightning fit, on both sides
            run_plain(url, spec_for("warm-a", 2, n_samples, 2))
            run_service(api, spec_for("warm-b", 2, n_samples, 2))
            ratios = []
            for i in range(pairs):
                a = run_plain(url, spec_for(f"plain-{i}", N_TRIALS, n_samples, epochs))
                b = run_service(api, spec_for(f"service-{i}", N_TRIALS, n_samples, epochs))
                ratios.append(b / a)
                print(
                    f"pair {i + 1}/{pairs}: (a) optuna {a:.2f}s  (b) service {b:.2f}s  "
                    f"b/a {b / a:.3f}",
                    flush=True,
                )
        finally:
            proc.terminate()
            proc.wait(60)
    print(f"ratio: {statistics.median(ratios):.2f}")


if __name__ == "__main__":
    main()
