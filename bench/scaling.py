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

Baseline, measured in the same run (alternating with the regtune arms): the hardware's own
ceiling for this workload. The same trials (same trainer, config, search space and random
sampler) run as a plain in-memory Optuna script (no database, no service) in 1 process, then in
2 processes at once with the cores shared out the way regtune shares them (1 process: torch's
default threads; 2 processes: cores // 2 each). Its 2/1 throughput is the most any coordination
could reach on this machine; ``efficiency`` = regtune's 2/1 ÷ that ceiling. Also printed, per
run: regtune's 2-worker throughput ÷ the plain 2-process throughput of the same run (steadier
when the 1-process arms vary, e.g. when a second torch thread helps in some runs only). A
ceiling well under 2 means the two cores do not run two trainings at full speed at once (a virtual
machine's vCPUs sharing physical cores, memory bandwidth, turbo), not regtune.

    python bench/scaling.py              # 40 trials per run, 3 runs per arm
    python bench/scaling.py --short      # 16 trials per run, 1 run per arm (make bench)
    python bench/scaling.py --rows 9000  # longer epochs (default 3,000 rows: about 45 ms each)

The per-trial coordination cost (claim, Optuna's trial rows and one ``report()`` per epoch in
PostgreSQL, regtune's epoch rows) is printed as the 1-worker trial span minus the baseline's
1-process span, per trial: a fixed cost per trial and per epoch, so the shorter the epochs the
more it weighs on the 2-worker figure (both processes' database work runs on the same 2 cores).
``--epochs`` and ``--rows`` set the trial's epochs and data set size (the same in every arm).

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
from service.db import make_engine
from service.models import TrialRecord
from service.spec import StudySpec

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
    # the search alone, as the plain Optuna arm runs it (no reference run after it)
    "reference": False,
}

REGTUNE = str(Path(sys.executable).with_name("regtune"))


def study_spec(name: str, epochs: int, rows: int, n_trials: int | None = None) -> StudySpec:
    """STUDY with `epochs` training epochs per trial on `rows` generated rows."""
    config = {**STUDY["trainer_config"], "max_epochs": epochs, "n_samples": rows}
    fields: dict[str, Any] = {**STUDY, "name": name, "trainer_config": config}
    if n_trials is not None:
        fields["budget"] = {"n_trials": n_trials}
    return StudySpec.model_validate(fields)


def submit(url: str, name: str, n_trials: int, epochs: int, rows: int) -> int:
    """Store the benchmark study (queued) as the API would; its id."""
    return _common.submit_study(url, study_spec(name, epochs, rows, n_trials))


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


def _plain_child(n_trials: int, seed: int, epochs: int, rows: int) -> None:
    """A child of the baseline: `n_trials` of STUDY in plain in-memory Optuna; prints the
    (start, end) wall-clock times of its trials as JSON on stdout."""
    import json

    import optuna

    from trainers import run_trial

    _common.quiet()
    spec = study_spec("plain", epochs, rows)
    objective_spec = spec.objective_spec(torch_threads=_threads_from_env())
    spans: list[tuple[float, float]] = []

    def objective(trial: optuna.Trial) -> float:
        start = time.time()
        value = run_trial(trial, objective_spec).value
        spans.append((start, time.time()))
        return value

    study = optuna.create_study(
        sampler=optuna.samplers.RandomSampler(seed=seed), pruner=optuna.pruners.NopPruner()
    )
    study.optimize(objective, n_trials=n_trials)
    print(json.dumps(spans))


def _threads_from_env() -> int | None:
    value = os.environ.get("REGTUNE_TORCH_THREADS")
    return int(value) if value else None


def run_plain(
    n_trials: int, processes: int, epochs: int, rows: int, threads: int | None = None
) -> tuple[int, float]:
    """The baseline arm: `processes` plain-Optuna processes share `n_trials`; (trials, span s)."""
    import json

    from service.worker.devices import share_cpu_threads

    env = share_cpu_threads({**os.environ, "TZ": "UTC"}, processes)
    if threads is not None:
        env["REGTUNE_TORCH_THREADS"] = str(threads)
    share = [
        n_trials // processes + (1 if i < n_trials % processes else 0) for i in range(processes)
    ]
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--plain-child", str(k), str(i), str(epochs), str(rows)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for i, k in enumerate(share)
    ]
    spans: list[tuple[float, float]] = []
    for proc in procs:
        out, err = proc.communicate(timeout=3600)
        if proc.returncode != 0:
            raise RuntimeError(f"baseline process exited {proc.returncode}: {err.decode()[-2000:]}")
        spans += [tuple(s) for s in json.loads(out.decode().strip().splitlines()[-1])]
    return len(spans), max(e for _, e in spans) - min(s for s, _ in spans)


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
    parser.add_argument(
        "--epochs", type=int, default=STUDY["trainer_config"]["max_epochs"], help="per trial"
    )
    parser.add_argument(
        "--rows", type=int, default=STUDY["trainer_config"]["n_samples"], help="data set size"
    )
    parser.add_argument("--plain-child", nargs=4, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.plain_child:
        _plain_child(*args.plain_child)
        return
    n_trials = args.trials or (16 if args.short else 40)
    _common.quiet()
    repeats = args.repeats or (1 if args.short else 3)

    rows: list[list[Any]] = []
    rates: dict[tuple[str, int], list[float]] = {}

    def record(arm: str, i: int, workers: int, n: int, span: float, wall: float | None) -> None:
        rate = 60.0 * n / span
        rates.setdefault((arm, workers), []).append(rate)
        rows.append([arm, i + 1, workers, n, span, wall, rate])
        print(
            f"{arm} run {i + 1} processes {workers}: {n} trials in {span:.1f}s = "
            f"{rate:.1f} trials/min",
            flush=True,
        )

    with _common.scratch_postgres("regtune_bench_scaling") as url:
        migrations.upgrade(url)
        for i in range(repeats):
            for workers in (1, 2):
                n, span = run_plain(
                    n_trials, workers, args.epochs, args.rows, args.threads_per_worker
                )
                record("plain optuna (in memory)", i, workers, n, span, None)
                name = f"scaling-{i}-{workers}w"
                study_id = submit(url, name, n_trials, args.epochs, args.rows)
                wall = run_workers(url, study_id, workers, args.threads_per_worker)
                n, span = trial_span(url, study_id)
                record("regtune workers (PostgreSQL)", i, workers, n, span, wall)
    print(
        _common.table(
            [
                "arm",
                "run",
                "processes",
                "trials",
                "trial span s",
                "wall s (incl. start-up)",
                "trials/min",
            ],
            rows,
        )
    )
    med = {key: _common.median(values) for key, values in rates.items()}
    ceiling = med[("plain optuna (in memory)", 2)] / med[("plain optuna (in memory)", 1)]
    one = med[("regtune workers (PostgreSQL)", 1)]
    two = med[("regtune workers (PostgreSQL)", 2)]
    print(
        f"median trials/min: regtune 1 worker {one:.1f}, 2 workers {two:.1f} (x{two / one:.2f}); "
        f"hardware ceiling (plain in-memory 2/1) x{ceiling:.2f}; "
        f"efficiency {two / one / ceiling:.2f}; cpus {os.cpu_count()}, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    # steadier than the ceiling on a host where the 1-process arm's second torch thread helps
    # more in some runs than in others: regtune's 2 workers against the plain 2 processes of
    # the same run (the two arms ran minutes apart, not hours)
    paired = [
        r / p
        for r, p in zip(
            rates[("regtune workers (PostgreSQL)", 2)],
            rates[("plain optuna (in memory)", 2)],
            strict=True,
        )
    ]
    print(
        "regtune 2 workers / plain 2 processes, per run: "
        + ", ".join(f"{x:.2f}" for x in paired)
        + f" (median {_common.median(paired):.2f})"
    )
    # seconds per trial at the median 1-process throughput (trials/min)
    plain_s = 60.0 / med[("plain optuna (in memory)", 1)]
    cost_ms = 1000 * (60.0 / one - plain_s)
    print(
        f"trial length ({args.epochs} epochs x {args.rows} rows, 1 process): {plain_s:.2f} s; "
        f"regtune's coordination cost per trial (1 worker - baseline): {cost_ms:.0f} ms"
    )
    print(_common.ratio_line(two / one))


if __name__ == "__main__":
    main()
