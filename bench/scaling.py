"""Worker scaling: trials per minute with 1 and 2 `regtune worker` processes on PostgreSQL.

The script creates a uniquely named PostgreSQL database (dropped at the end), migrates it
(``service.migrations.upgrade``: Optuna's and regtune's tables) and, per run, stores one study
through the service layer (``service.studies.service.create_study``, what ``POST
/api/v1/studies`` does). It then starts N real worker processes (``regtune worker --devices
cpu --trials-per-device N --study ID --exit-when-idle``) and waits for them to exit. The study
trains a small ``synthetic-mlp`` (``STUDY``) with random sampling and no pruning, so every
trial does the same amount of work whatever the number of workers.

Throughput = finished trials / (last trial's ``finished_at`` - first trial's ``started_at``)
read from ``regtune_trials``, so process start-up (imports) is not counted; the wall time
including start-up is printed too. Runs alternate 1 worker, 2 workers, 1, 2, ...; each run is a
new study. Headline: median 2-worker throughput / median 1-worker throughput (target >= 1.8 on
2 cores, meaningful only on an otherwise idle machine).

    python bench/scaling.py            # 40 trials per run, 3 runs per arm
    python bench/scaling.py --short    # 16 trials per run, 1 run per arm (make bench)

Needs PostgreSQL at REGTUNE_BENCH_POSTGRES_URL (default
postgresql+psycopg://postgres@127.0.0.1:5432/test; only used to create the scratch database).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import _common
from sqlalchemy import func, select

from service import migrations
from service.db import make_engine, make_session_factory, unit_of_work
from service.models import TrialRecord
from service.spec import StudySpec
from service.studies.optuna_storage import LazyOptunaStorage
from service.studies.service import create_study

STUDY: dict[str, Any] = {
    "trainer": "synthetic-mlp",
    # about 1 s of training per trial on an idle core: large enough that the per-trial
    # coordination (claim, Optuna trial, per-epoch rows) does not dominate
    "trainer_config": {"max_epochs": 15, "n_samples": 3000, "hidden_sizes": [128, 128]},
    "search_space": {
        "weight_decay": {"low": 1.0e-6, "high": 1.0e-1, "log": True},
        "dropout": {"low": 0.0, "high": 0.5},
        "label_smoothing": {"low": 0.0, "high": 0.2},
        "batch_size": {"choices": [64]},
        "patience": {"fixed": 100},
    },
    "sampler": {"name": "random", "seed": 0},
    "pruner": {"name": "none"},
}

REGTUNE = str(Path(sys.executable).with_name("regtune"))


def submit(url: str, name: str, n_trials: int) -> int:
    """Store the benchmark study (queued) as the API would; its id."""
    spec = StudySpec.model_validate({**STUDY, "name": name, "budget": {"n_trials": n_trials}})
    engine = make_engine(url)
    storage = LazyOptunaStorage(url)
    try:
        with unit_of_work(make_session_factory(engine)) as session:
            return create_study(session, storage, spec).id
    finally:
        storage.dispose()
        engine.dispose()


def run_workers(url: str, study_id: int, workers: int, threads: int | None = None) -> float:
    """Run `workers` worker processes on the study the way a user does on one host
    (``regtune worker --devices cpu --trials-per-device N``), wait for them; wall seconds.

    That command shares the cores out among its N processes (torch threads = cores // N).
    `threads` sets REGTUNE_TORCH_THREADS instead; None keeps regtune's default.
    """
    env = {**os.environ, "REGTUNE_DATABASE_URL": url, "TZ": "UTC"}
    if threads is not None:
        env["REGTUNE_TORCH_THREADS"] = str(threads)
    cmd = [REGTUNE, "worker", "--devices", "cpu", "--trials-per-device", str(workers)]
    cmd += ["--study", str(study_id), "--exit-when-idle"]
    start = time.perf_counter()
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)]
    for proc in procs:
        _, err = proc.communicate(timeout=3600)
        if proc.returncode != 0:
            raise RuntimeError(f"worker exited {proc.returncode}: {err.decode()[-2000:]}")
    return time.perf_counter() - start


def trial_span(url: str, study_id: int) -> tuple[int, float]:
    """(finished trials, seconds from the first trial start to the last trial end)."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            n, first, last = conn.execute(
                select(
                    func.count(),
                    func.min(TrialRecord.started_at),
                    func.max(TrialRecord.finished_at),
                ).where(TrialRecord.study_id == study_id, TrialRecord.finished_at.is_not(None))
            ).one()
    finally:
        engine.dispose()
    if not isinstance(first, datetime) or not isinstance(last, datetime):
        raise RuntimeError(f"study {study_id} finished no trial")
    return int(n), (last - first).total_seconds()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", action="store_true", help="16 trials, 1 run per arm")
    parser.add_argument("--trials", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument(
        "--threads-per-worker",
        type=int,
        default=None,
        help="REGTUNE_TORCH_THREADS for each worker (default: the cores shared out)",
    )
    args = parser.parse_args()
    n_trials = args.trials or (16 if args.short else 40)
    _common.quiet()
    repeats = args.repeats or (1 if args.short else 3)

    rows: list[list[Any]] = []
    rates: dict[int, list[float]] = {1: [], 2: []}
    with _common.scratch_postgres("regtune_bench_scaling") as url:
        migrations.upgrade(url)
        for i in range(repeats):
            for workers in (1, 2):
                study_id = submit(url, f"scaling-{i}-{workers}w", n_trials)
                wall = run_workers(url, study_id, workers, args.threads_per_worker)
                n, span = trial_span(url, study_id)
                rate = 60.0 * n / span
                rates[workers].append(rate)
                rows.append([i + 1, workers, n, span, wall, rate])
                print(
                    f"run {i + 1} workers {workers}: {n} trials in {span:.1f}s "
                    f"(wall {wall:.1f}s) = {rate:.1f} trials/min",
                    flush=True,
                )
    print(
        _common.table(
            ["run", "workers", "trials", "trial span s", "wall s (incl. start-up)", "trials/min"],
            rows,
        )
    )
    one, two = _common.median(rates[1]), _common.median(rates[2])
    print(
        f"median trials/min: 1 worker {one:.1f}, 2 workers {two:.1f}; cpus {os.cpu_count()}, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    print(_common.ratio_line(two / one))


if __name__ == "__main__":
    main()
