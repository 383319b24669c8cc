"""deploy/slurm/regtune-workers.sbatch, run by real bash with Slurm's commands stubbed.

A stub `sbatch` starts the script the way Slurm's batch step would (job ids, the GPUs its
`#SBATCH --gres` asks for, the cores of --cpus-per-task); a stub `regtune` records how each
worker was started and which signals reached it; a stub `scontrol` records requeues.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.deploy._tools import ROOT

SCRIPT = ROOT / "deploy" / "slurm" / "regtune-workers.sbatch"
DB_URL = "postgresql+psycopg://regtune:pw@db.internal:5432/regtune"

SBATCH_STUB = r"""#!/bin/bash
# Emulates Slurm starting a batch script: reads its #SBATCH lines, sets the job's environment.
set -euo pipefail
script="$1"; shift
gres=$(sed -n 's/^#SBATCH --gres=gpu:\([0-9]*\).*/\1/p' "$script")
cpus=$(sed -n 's/^#SBATCH --cpus-per-task=\([0-9]*\).*/\1/p' "$script")
if [[ -z "${CUDA_VISIBLE_DEVICES+set}" ]]; then
    export CUDA_VISIBLE_DEVICES=$(seq -s, 0 $((gres - 1)))
fi
export SLURM_JOB_ID=4243 SLURM_ARRAY_JOB_ID=4242 SLURM_ARRAY_TASK_ID=3
export SLURM_CPUS_ON_NODE="$cpus"
exec bash "$script" "$@"
"""

REGTUNE_STUB = r"""#!/bin/bash
log="$STUB_DIR/worker.$$"
printf 'cvd=%s threads=%s url=%s tz=%s args=%s\n' "$CUDA_VISIBLE_DEVICES" \
    "${REGTUNE_TORCH_THREADS:-}" "${REGTUNE_DATABASE_URL:-}" "${TZ:-}" "$*" > "$log"
if [[ "${STUB_MODE:-idle}" == idle ]]; then exit 0; fi
trap 'echo TERM >> "$log"; exit 0' TERM
touch "$STUB_DIR/ready.$$"
while true; do sleep 0.05; done
"""

SCONTROL_STUB = r"""#!/bin/bash
echo "$*" >> "$STUB_DIR/scontrol.log"
"""


@pytest.fixture
def stubs(tmp_path: Path) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (
        ("sbatch", SBATCH_STUB),
        ("regtune", REGTUNE_STUB),
        ("scontrol", SCONTROL_STUB),
    ):
        path = bin_dir / name
        path.write_text(text)
        path.chmod(0o755)
    return tmp_path


def job_env(stubs: Path, **extra: str) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("REGTUNE_", "SLURM_", "CUDA"))}
    env = {
        **keep,
        "PATH": f"{stubs / 'bin'}:{os.environ['PATH']}",
        "STUB_DIR": str(stubs),
        "REGTUNE_DATABASE_URL": DB_URL,
    }
    env.update(extra)
    return env


def submit(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sbatch", str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=60
    )


def worker_logs(stubs: Path) -> list[list[str]]:
    return [p.read_text().splitlines() for p in sorted(stubs.glob("worker.*"))]


def test_directives_ask_for_requeue_and_a_warning_signal() -> None:
    directives = [ln for ln in SCRIPT.read_text().splitlines() if ln.startswith("#SBATCH")]
    assert "#SBATCH --requeue" in directives
    assert "#SBATCH --signal=B:USR1@300" in directives
    done = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_one_worker_per_allocated_gpu(stubs: Path) -> None:
    done = submit(job_env(stubs), "--study", "12")
    assert done.returncode == 0, done.stderr
    lines = sorted(log[0] for log in worker_logs(stubs))
    # --gres=gpu:4 and --cpus-per-task=32: four workers, one GPU and 8 torch threads each
    assert [ln.split()[0] for ln in lines] == [f"cvd={i}" for i in range(4)]
    for ln in lines:
        assert "threads=8" in ln
        assert f"url={DB_URL}" in ln
        assert "tz=UTC" in ln
        assert ln.endswith("args=worker --accelerator auto --exit-when-idle --study 12")


def test_gpus_slurm_sets_and_trials_per_gpu(stubs: Path) -> None:
    env = job_env(stubs, CUDA_VISIBLE_DEVICES="2,5", REGTUNE_TRIALS_PER_GPU="2")
    done = submit(env)
    assert done.returncode == 0, done.stderr
    cvds = sorted(log[0].split()[0] for log in worker_logs(stubs))
    assert cvds == ["cvd=2", "cvd=2", "cvd=5", "cvd=5"]
    assert all("threads=8" in log[0] for log in worker_logs(stubs))  # 32 cores / 4 workers


def test_database_url_from_an_env_file(stubs: Path) -> None:
    env_file = stubs / "regtune.env"
    env_file.write_text("REGTUNE_DATABASE_URL=postgresql+psycopg://u@filehost/db\n")
    env = job_env(stubs, REGTUNE_ENV_FILE=str(env_file))
    del env["REGTUNE_DATABASE_URL"]
    done = submit(env)
    assert done.returncode == 0, done.stderr
    assert all("url=postgresql+psycopg://u@filehost/db" in log[0] for log in worker_logs(stubs))


@pytest.mark.parametrize(
    ("extra", "drop_url", "message"),
    [
        ({}, True, "REGTUNE_DATABASE_URL is not set"),
        ({"REGTUNE_DATABASE_URL": "sqlite:///x.db"}, False, "need PostgreSQL"),
        ({"CUDA_VISIBLE_DEVICES": ""}, False, "no GPU allocated"),
        ({"REGTUNE_TRIALS_PER_GPU": "0"}, False, "REGTUNE_TRIALS_PER_GPU must be"),
    ],
)
def test_refuses_a_job_it_cannot_run(
    stubs: Path, extra: dict[str, str], drop_url: bool, message: str
) -> None:
    env = job_env(stubs, **extra)
    if drop_url:
        del env["REGTUNE_DATABASE_URL"]
    done = submit(env)
    assert done.returncode == 2
    assert message in done.stderr
    assert worker_logs(stubs) == []


def start_busy(stubs: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        ["sbatch", str(SCRIPT)],
        env=job_env(stubs, STUB_MODE="busy"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while len(list(stubs.glob("ready.*"))) < 4:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "workers did not start"
        time.sleep(0.05)
    return proc


def test_sigterm_is_forwarded_once_to_every_worker(stubs: Path) -> None:
    proc = start_busy(stubs)
    proc.send_signal(signal.SIGTERM)  # the batch shell only, as `scancel --batch` does
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    logs = worker_logs(stubs)
    assert len(logs) == 4
    assert all(log[1:] == ["TERM"] for log in logs)
    assert not (stubs / "scontrol.log").exists()


def test_time_limit_warning_stops_workers_then_requeues_the_array_task(stubs: Path) -> None:
    proc = start_busy(stubs)
    proc.send_signal(signal.SIGUSR1)
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert all(log[1:] == ["TERM"] for log in worker_logs(stubs))
    assert (stubs / "scontrol.log").read_text().splitlines() == ["requeue 4242_3"]


@pytest.mark.postgres
def test_the_real_worker_accepts_the_scripts_command_line(pg_url: str, tmp_path: Path) -> None:
    """The real `regtune worker` behind the script: migrated PostgreSQL, no work, exits 0."""
    from service.migrations import upgrade

    upgrade(pg_url)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(SBATCH_STUB)
    (bin_dir / "sbatch").chmod(0o755)
    regtune = Path(sys.executable).parent / "regtune"
    env = {
        **job_env(tmp_path, CUDA_VISIBLE_DEVICES="0", REGTUNE_BIN=str(regtune)),
        "REGTUNE_DATABASE_URL": pg_url,
    }
    done = submit(env, "--max-trials", "1")
    assert done.returncode == 0, done.stderr
    assert "started 1 workers on GPUs 0" in done.stderr
