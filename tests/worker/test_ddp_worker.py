"""`regtune worker --devices-per-trial N`: each trial a Lightning DDP run over N devices.

On CPU (`--devices cpu`) the ranks are gloo processes: the real worker runs a study whose trials
train over 2 processes, rank 0 alone records them, and no helper rank outlives its trial.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from service.migrations import upgrade
from service.models import StudyStatus, TrialState
from service.worker.devices import CPU, DeviceError, group_devices
from tests.reliability._processes import env_for
from tests.worker.conftest import Db, insert_study, tiny_spec


def _helper_ranks_of(url: str) -> list[int]:
    """Helper rank processes (`python -m trainers._ddp`) started for the database at `url`."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (proc / "cmdline").read_bytes()
            environ = (proc / "environ").read_bytes()
        except OSError:
            continue
        if b"trainers._ddp" in cmdline and f"REGTUNE_DATABASE_URL={url}".encode() in environ:
            found.append(int(proc.name))
    return found


def test_group_devices() -> None:
    assert group_devices(["0", "1", "2", "3"], 2) == ["0,1", "2,3"]
    assert group_devices(["0", "1"], 1) == ["0", "1"]
    assert group_devices([CPU], 2) == [CPU]
    assert group_devices([CPU, CPU], 2) == [CPU]
    with pytest.raises(DeviceError, match="--devices-per-trial 3 must divide the 4 devices"):
        group_devices(["0", "1", "2", "3"], 3)


@pytest.mark.slow
def test_a_worker_runs_each_trial_over_two_ranks(sqlite_url: str) -> None:
    upgrade(sqlite_url)
    study_id = insert_study(sqlite_url, tiny_spec("ddp", 2))
    args = ["--devices", "cpu", "--devices-per-trial", "2", "--exit-when-idle"]
    done = subprocess.run(
        [sys.executable, "-m", "service.cli", "worker", *args],
        env=env_for(sqlite_url, REGTUNE_TORCH_THREADS="1"),
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "MEMBER: 2/2" in done.stderr  # Lightning's DDP start-up line of rank 1
    db = Db(sqlite_url)
    assert db.study(study_id).status == StudyStatus.completed
    trials = db.trials(study_id)
    assert [t.state for t in trials] == [TrialState.complete] * 2
    assert all(t.epochs_run == len(db.epochs(t.id)) > 0 for t in trials)  # rank 0 wrote once
    assert _helper_ranks_of(sqlite_url) == []
