"""GPU check: the GPU paths of regtune, end to end, in a few minutes on a CUDA host.

Every check runs real `regtune worker` processes on a scratch SQLite database (one study each,
stored through the service layer as ``POST /api/v1/studies`` stores it):

1. packing: one study on one GPU with 1, then 4 trials packed per device (``--devices 0
   --trials-per-device N``); trials/minute of each and the ratio line ``ratio: 4/1 = x``;
2. precision: one ``execution.precision: bf16-mixed`` trial;
3. DDP: one trial over every visible GPU (``--devices 0,1,.. --devices-per-trial N``; skipped
   with one GPU);
4. resume: a worker SIGKILLed mid-trial with ``REGTUNE_CHECKPOINT_DIR`` set; the retry must
   resume from a later epoch than 0;
5. memory: peak GPU memory of one trial (``torch.cuda.max_memory_allocated``) against the
   model's own size (parameters only): the best epoch's weights must not add a second copy;
6. repeats: a study with confirmation (``confirm: {top_k: 1, repeats: 4}``) run twice, 2 trials
   packed per device: every run once with its own training seed, and each seed's value the
   same in both runs (within ``SEED_TOLERANCE``).

    python bench/gpu_check.py             # on a CUDA host (under 8 minutes on one GPU)
    python bench/gpu_check.py --dry-run   # same code path on CPU devices (CI: no GPU needed)

``--dry-run`` swaps the device flags (``--devices cpu``), runs the DDP check over 2 CPU ranks
(gloo), measures peak RSS instead of GPU memory, and shrinks the studies. Exit status 1 when a
check fails; the last line is the packing ratio.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import _common  # noqa: E402

from service import migrations  # noqa: E402
from service.db import make_engine, make_session_factory, unit_of_work  # noqa: E402
from service.models import TrialRecord, TrialRole, TrialState  # noqa: E402
from service.spec import StudySpec  # noqa: E402
from service.studies.optuna_storage import LazyOptunaStorage  # noqa: E402

# a model big enough to keep a GPU busy for a moment per epoch, small enough for 8 minutes
GPU_CONFIG = {"n_samples": 20_000, "n_features": 64, "hidden_sizes": [1024, 1024]}
CPU_CONFIG = {"n_samples": 400, "n_features": 8, "n_informative": 4, "hidden_sizes": [32]}


@dataclass
class Plan:
    dry_run: bool
    gpus: int  # visible CUDA devices (0 on a dry run)
    epochs: int
    trials: int  # per packing arm

    @property
    def config(self) -> dict[str, Any]:
        base = CPU_CONFIG if self.dry_run else GPU_CONFIG
        return {**base, "max_epochs": self.epochs}

    def devices(self, n: int = 1) -> list[str]:
        if self.dry_run:
            return ["--devices", "cpu"]
        return ["--devices", ",".join(str(i) for i in range(n))]


def _spec(name: str, plan: Plan, n_trials: int, **fields: Any) -> StudySpec:
    return StudySpec.model_validate(
        {
            "name": name,
            "trainer": "synthetic-mlp",
            "trainer_config": plan.config,
            "search_space": {
                "dropout": {"low": 0.0, "high": 0.5},
                "weight_decay": {"low": 1e-6, "high": 1e-2, "log": True},
                "batch_size": {"fixed": 256},
                "patience": {"fixed": 1000},
            },
            "sampler": {"name": "random", "seed": 0},
            "pruner": {"name": "none"},
            "budget": {"n_trials": n_trials},
            "reference": False,  # the device paths only: no reference run after the search
            **fields,
        }
    )


def _trials(url: str, study_id: int) -> list[TrialRecord]:
    engine = make_engine(url)
    try:
        with unit_of_work(make_session_factory(engine)) as session:
            rows = session.query(TrialRecord).filter(TrialRecord.study_id == study_id)
            return list(rows.order_by(TrialRecord.id))
    finally:
        engine.dispose()


@dataclass
class Worker:
    """A `regtune worker` process (its own process group) and its stderr, kept in a file: a
    pipe nobody reads while the check polls would fill up and block the worker."""

    proc: subprocess.Popen[bytes]
    log: IO[bytes]

    def signal(self, signum: int) -> None:
        """`signum` to the worker and the processes it placed on devices (its group)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signum)

    def stderr_tail(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-2000:]


def _worker(
    url: str,
    study_id: int,
    *args: str,
    exit_when_idle: bool = True,
    env: dict[str, str] | None = None,
) -> Worker:
    full_env = {
        **os.environ,
        "REGTUNE_DATABASE_URL": url,
        "TZ": "UTC",
        "REGTUNE_WORKER_POLL_INTERVAL": "0.2",
        "REGTUNE_EPOCH_FLUSH_INTERVAL": "0",
        # the checkout first, then whatever the caller's environment adds (a packages folder)
        "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p),
        **(env or {}),
    }
    cmd = [sys.executable, "-m", "service.cli", "worker", "--study", str(study_id), *args]
    if exit_when_idle:
        cmd.append("--exit-when-idle")
    log = tempfile.TemporaryFile()  # noqa: SIM115 (the Worker owns it; _finish closes it)
    proc = subprocess.Popen(cmd, env=full_env, cwd=REPO, stderr=log, start_new_session=True)
    return Worker(proc, log)


def _finish(worker: Worker, timeout: float = 600) -> None:
    try:
        worker.proc.wait(timeout=timeout)
        if worker.proc.returncode != 0:
            raise RuntimeError(f"worker exited {worker.proc.returncode}: {worker.stderr_tail()}")
    finally:
        worker.signal(signal.SIGKILL)  # anything it left behind (a timeout, an orphaned child)
        worker.log.close()


def _complete(url: str, study_id: int) -> list[TrialRecord]:
    """The study's search trials, all complete (extra runs beside the search are left out)."""
    rows = [t for t in _trials(url, study_id) if t.role == TrialRole.search]
    bad = [f"{t.number}: {t.state} {t.error or ''}" for t in rows if t.state != TrialState.complete]
    if bad or not rows:
        raise RuntimeError(f"study {study_id}: trials not complete: {bad or 'none ran'}")
    return rows


def check_packing(url: str, plan: Plan) -> float:
    rates: dict[int, float] = {}
    for packed in (1, 4):
        study_id = _common.submit_study(url, _spec(f"packing-{packed}", plan, plan.trials))
        start = time.perf_counter()
        _finish(_worker(url, study_id, *plan.devices(), "--trials-per-device", str(packed)))
        rows = _complete(url, study_id)
        rates[packed] = len(rows) / ((time.perf_counter() - start) / 60)
        print(f"packing: {packed} trial(s) per device: {rates[packed]:.1f} trials/minute")
    return rates[4] / rates[1]


def check_bf16(url: str, plan: Plan) -> None:
    spec = _spec("bf16", plan, 1, execution={"precision": "bf16-mixed"})
    study_id = _common.submit_study(url, spec)
    _finish(_worker(url, study_id, *plan.devices()))
    (row,) = _complete(url, study_id)
    print(f"bf16-mixed: 1 trial complete, best val_loss {row.value:.4f}")


def check_ddp(url: str, plan: Plan) -> None:
    ranks = 2 if plan.dry_run else plan.gpus
    if ranks < 2:
        print("ddp: skipped (one GPU visible)")
        return
    study_id = _common.submit_study(url, _spec("ddp", plan, 1))
    args = [*plan.devices(ranks), "--devices-per-trial", str(ranks)]
    _finish(_worker(url, study_id, *args, env={"REGTUNE_TORCH_THREADS": "1"}))
    (row,) = _complete(url, study_id)
    print(f"ddp: 1 trial over {ranks} ranks complete, {row.epochs_run} epochs")


# two runs of one configuration with one training seed may differ by at most this much on a
# device (training noise between seeds is 0.007-0.02 in val_loss: docs/benchmarks.md)
SEED_TOLERANCE = 1e-3


def check_repeats(url: str, plan: Plan) -> None:
    """Training seeds on the device: one configuration searched twice (two warm-start points,
    so packing cannot change which trial gets which parameters) and re-trained 4 times
    (``confirm: {top_k: 1, repeats: 4}``), 2 trials packed per device; the study run twice.
    Each run: 6 complete runs with 6 seeds; between the two runs, each seed's value within
    `SEED_TOLERANCE` (the largest difference is printed)."""
    point = {"dropout": 0.2, "weight_decay": 1e-4}
    fields = {"confirm": {"top_k": 1, "repeats": 4}, "enqueue": [point, point]}
    runs: list[dict[int | None, float | None]] = []
    for attempt in (1, 2):
        study_id = _common.submit_study(url, _spec(f"repeats-{attempt}", plan, 2, **fields))
        _finish(_worker(url, study_id, *plan.devices(), "--trials-per-device", "2"))
        rows = _trials(url, study_id)
        bad = [
            f"{t.number}: {t.state} {t.error or ''}" for t in rows if t.state != TrialState.complete
        ]
        by_seed = {t.train_seed: t.value for t in rows}
        if bad or len(rows) != 6 or len(by_seed) != 6:
            raise RuntimeError(
                f"repeats: expected 6 complete runs with 6 seeds, got {len(rows)} runs, "
                f"{len(by_seed)} seeds, not complete: {bad}"
            )
        runs.append(by_seed)
    first, second = runs
    if set(first) != set(second):
        raise RuntimeError(f"repeats: other seeds in the second run: {first} vs {second}")
    differences = []
    for seed, value in first.items():
        other = second[seed]
        if value is None or other is None:
            raise RuntimeError(f"repeats: seed {seed} has no value")
        differences.append(abs(value - other))
    worst = max(differences)
    identical = sum(d == 0 for d in differences)
    print(
        f"repeats: 6 runs (2 search + 4 confirmation, 2 packed per device) twice: "
        f"{identical} of 6 identical, largest difference {worst:.2e} (same seeds)"
    )
    if worst > SEED_TOLERANCE:
        raise RuntimeError(f"repeats: one seed trained to values {worst:.2e} apart")


# the resume study trains this many epochs past the kill: the kill must land mid-trial
RESUME_EXTRA_EPOCHS = 30
# generous: a loaded CI machine starts a worker (torch, Lightning) in tens of seconds
RESUME_DEADLINE_S = 300.0


def _wait_for(what: str, ready: Callable[[], bool], worker: Worker) -> None:
    """Poll until `ready()`; fail if `worker` exits first or after `RESUME_DEADLINE_S`."""
    deadline = time.monotonic() + RESUME_DEADLINE_S
    while not ready():
        if worker.proc.poll() is not None:
            raise RuntimeError(
                f"resume: the worker exited {worker.proc.returncode} before {what}: "
                f"{worker.stderr_tail()}"
            )
        if time.monotonic() > deadline:
            raise RuntimeError(f"resume: no {what} within {RESUME_DEADLINE_S:.0f} s")
        time.sleep(0.1)


def check_resume(url: str, plan: Plan, checkpoints: Path) -> None:
    """A worker SIGKILLed mid-trial: a worker still alive finds the trial lost (no heartbeat
    within the grace period), Optuna retries it, and the retry resumes from the checkpoint.

    Every step waits on its condition (a checkpoint on disk, the retry's row complete) with one
    generous deadline; nothing assumes how fast a worker starts or a trial trains.
    """
    kill_at = max(2, plan.epochs // 2)
    config = {**plan.config, "max_epochs": kill_at + RESUME_EXTRA_EPOCHS}
    study_id = _common.submit_study(url, _spec("resume", plan, 1, trainer_config=config))
    env = {
        "REGTUNE_CHECKPOINT_DIR": str(checkpoints),
        "REGTUNE_CHECKPOINT_INTERVAL": "0",
        # the killed worker's trial is declared lost (and retried) after 5 s, not 2 minutes
        "REGTUNE_HEARTBEAT_INTERVAL": "1",
        "REGTUNE_HEARTBEAT_GRACE_PERIOD": "5",
    }

    def checkpointed() -> bool:
        rows = [t for t in _trials(url, study_id) if t.epochs_run and t.epochs_run >= kill_at]
        return any(_checkpoint_path(checkpoints, study_id, t).exists() for t in rows)

    # the whole process group is killed: with GPU devices the trial runs in a child process
    first = _worker(url, study_id, *plan.devices(), env=env)
    try:
        _wait_for(f"checkpoint after {kill_at} epochs", checkpointed, first)
    finally:
        first.signal(signal.SIGKILL)
        first.proc.wait()
        first.log.close()
    (killed,) = _trials(url, study_id)
    # a trial that ends deletes its checkpoint: one still there proves the kill was mid-trial
    if (
        killed.state != TrialState.running
        or not _checkpoint_path(checkpoints, study_id, killed).exists()
    ):
        raise RuntimeError(f"resume: the trial was {killed.state} when killed, not running")

    def retried() -> bool:
        return any(
            t.retry_of == killed.number and t.state == TrialState.complete
            for t in _trials(url, study_id)
        )

    # a worker that stays up (no --exit-when-idle): at first the lost trial still holds the
    # study's only slot, until the worker's sweep finds its heartbeat stale
    second = _worker(url, study_id, *plan.devices(), exit_when_idle=False, env=env)
    try:
        _wait_for("completed retry of the killed trial", retried, second)
    finally:
        second.signal(signal.SIGTERM)  # a clean stop: the worker exits 0
        _finish(second, timeout=120)
    retry = next(t for t in _trials(url, study_id) if t.retry_of == killed.number)
    storage = LazyOptunaStorage(url)
    try:
        frozen = storage.get().get_trial(retry.optuna_trial_id or 0)
    finally:
        storage.dispose()
    resumed_at = frozen.user_attrs.get("resumed_at_epoch")
    if not resumed_at:
        raise RuntimeError("resume: the retry started over from epoch 0")
    print(
        f"resume: killed after {killed.epochs_run} epochs, the retry resumed at epoch {resumed_at}"
    )


def _checkpoint_path(checkpoints: Path, study_id: int, trial: TrialRecord) -> Path:
    """Where the worker checkpoints `trial` (service.worker.trial: one file per lineage)."""
    return checkpoints / f"study-{study_id}" / f"trial-{trial.number}.ckpt"


def check_memory(plan: Plan) -> None:
    import optuna
    import torch

    from trainers import ObjectiveSpec, SearchSpace, get_trainer, run_trial

    spec = ObjectiveSpec(
        trainer="synthetic-mlp",
        trainer_config=plan.config,
        search_space=SearchSpace.model_validate({"patience": {"fixed": 1000}}),
        accelerator="cpu" if plan.dry_run else "gpu",
    )
    definition = get_trainer("synthetic-mlp")
    params = spec.search_space.sample(optuna.create_study().ask())
    probe, _ = definition.build(params, definition.validate_config(plan.config))
    model_mib = sum(p.numel() * p.element_size() for p in probe.parameters()) / 2**20
    if not plan.dry_run:
        torch.cuda.reset_peak_memory_stats()
    run_trial(optuna.create_study().ask(), spec)
    if plan.dry_run:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"memory: model {model_mib:.3f} MiB; peak RSS {peak:.0f} MiB (CPU: no GPU memory)")
    else:
        peak = torch.cuda.max_memory_allocated() / 2**20
        print(
            f"memory: model {model_mib:.1f} MiB; peak GPU memory per trial {peak:.1f} MiB "
            f"({peak / model_mib:.1f}x the model)"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="CPU devices (CI)")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--trials", type=int, default=None, help="trials per packing arm")
    args = parser.parse_args(argv)
    import optuna
    import torch

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if not args.dry_run and gpus == 0:
        print("error: no CUDA device visible (use --dry-run to check the code path on CPU)")
        return 2
    plan = Plan(
        dry_run=args.dry_run,
        gpus=0 if args.dry_run else gpus,
        epochs=args.epochs or (4 if args.dry_run else 10),
        trials=args.trials or (2 if args.dry_run else 16),
    )
    print(f"gpu_check: {'dry run on CPU' if plan.dry_run else f'{gpus} CUDA device(s)'}")
    with tempfile.TemporaryDirectory(prefix="regtune-gpu-check-") as tmp:
        url = f"sqlite:///{Path(tmp) / 'regtune.db'}"
        migrations.upgrade(url)
        checks: list[Callable[[], None]] = [
            lambda: check_bf16(url, plan),
            lambda: check_ddp(url, plan),
            lambda: check_resume(url, plan, Path(tmp) / "checkpoints"),
            lambda: check_memory(plan),
            lambda: check_repeats(url, plan),
        ]
        failed = 0
        for check in checks:
            try:
                check()
            except Exception as exc:
                failed += 1
                print(f"FAILED: {type(exc).__name__}: {exc}")
        try:
            ratio = check_packing(url, plan)
        except Exception as exc:
            print(f"FAILED: {type(exc).__name__}: {exc}")
            return 1
    print(f"ratio: 4/1 packed trials per device = {ratio:.2f}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
