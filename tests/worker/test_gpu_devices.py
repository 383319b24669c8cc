"""`regtune worker --devices 0,1`: a listed GPU that is not usable fails the worker at start.

This machine has no usable CUDA device (``torch.cuda.is_available()`` is False), which is exactly
the broken-driver case: the worker must say so instead of training on the CPU 100x slower.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from service.migrations import upgrade
from service.models import StudyStatus
from service.worker.devices import (
    CPU,
    MEMORY_FRACTION_ENV,
    DeviceError,
    accelerator_for,
    check_gpus,
    device_children,
    group_devices,
    guard_gpu_memory,
    parse_devices,
    share_gpu_memory,
)
from tests.reliability._processes import env_for
from tests.worker.conftest import Db, insert_study, settings_for, tiny_spec

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")


def _worker(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service.cli", "worker", *args],
        env=env_for(url),
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_an_unusable_gpu_fails_the_worker_at_start_with_one_line(sqlite_url: str) -> None:
    upgrade(sqlite_url)
    study_id = insert_study(sqlite_url, tiny_spec("gpu-listed", 1))
    done = _worker(sqlite_url, "--devices", "0,1", "--exit-when-idle")
    assert done.returncode != 0
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("error: --devices 0,1: no CUDA device is usable here")
    assert "--allow-cpu-fallback" in line
    assert Db(sqlite_url).trials(study_id) == []  # nothing was claimed, let alone run on the CPU


def test_with_allow_cpu_fallback_the_worker_trains_on_the_cpu(sqlite_url: str) -> None:
    upgrade(sqlite_url)
    study_id = insert_study(sqlite_url, tiny_spec("gpu-fallback", 1))
    done = _worker(sqlite_url, "--devices", "0", "--allow-cpu-fallback", "--exit-when-idle")
    assert done.returncode == 0, done.stderr
    assert "running on the CPU (--allow-cpu-fallback)" in done.stderr
    assert Db(sqlite_url).study(study_id).status == StudyStatus.completed


def test_auto_and_cpu_are_unchanged() -> None:
    assert check_gpus(parse_devices("auto")) == [CPU] == check_gpus(parse_devices("cpu"))
    assert accelerator_for(CPU) == "cpu"
    with pytest.raises(DeviceError, match="--devices 3"):
        check_gpus(["3"])
    assert check_gpus(["3", "4"], allow_cpu_fallback=True) == ["3", "4"]
    assert accelerator_for("3") == accelerator_for("3,4") == "auto"  # Lightning: the CPU here


def test_packed_trials_each_get_their_share_of_gpu_memory(
    monkeypatch: pytest.MonkeyPatch, sqlite_url: str
) -> None:
    assert share_gpu_memory({}, 4)[MEMORY_FRACTION_ENV] == "0.25"
    assert MEMORY_FRACTION_ENV not in share_gpu_memory({}, 1)
    assert share_gpu_memory({MEMORY_FRACTION_ENV: "0.4"}, 4)[MEMORY_FRACTION_ENV] == "0.4"
    monkeypatch.setenv(MEMORY_FRACTION_ENV, "0.25")
    fraction = settings_for(sqlite_url).gpu_memory_fraction
    assert fraction == 0.25

    # the worker process caps its CUDA allocations (a mocked two-GPU CUDA runtime)
    caps: list[tuple[float, int]] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(
        torch.cuda, "set_per_process_memory_fraction", lambda f, i: caps.append((f, i))
    )
    assert guard_gpu_memory(fraction)
    assert caps == [(0.25, 0), (0.25, 1)]
    assert not guard_gpu_memory(None)


def test_no_memory_cap_without_cuda() -> None:
    assert not guard_gpu_memory(0.5)


def _children_visible(devices: str | None, per_trial: int, env: dict[str, str]) -> list[str]:
    """What each child of `regtune worker --devices <devices>` gets as CUDA_VISIBLE_DEVICES."""
    placed = group_devices(check_gpus(parse_devices(devices)), per_trial)
    return [c.env["CUDA_VISIBLE_DEVICES"] for c in device_children(placed, 1, [], env)]


def test_devices_are_the_visible_cards_when_cuda_visible_devices_is_already_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Slurm or Kubernetes gave this job cards 2 and 3 (torch numbers them 0 and 1): each child
    must see one of those two, never the host's cards 0 and 1 (another job's)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    narrowed = {"CUDA_VISIBLE_DEVICES": "2,3"}
    assert _children_visible("auto", 1, narrowed) == ["2", "3"]
    assert _children_visible("1", 1, narrowed) == ["3"]
    assert _children_visible("auto", 2, narrowed) == ["2,3"]  # one DDP trial over both
    uuids = {"CUDA_VISIBLE_DEVICES": "GPU-aaaa, GPU-bbbb"}
    assert _children_visible("auto", 1, uuids) == ["GPU-aaaa", "GPU-bbbb"]
    # nothing inherited: the indices are the host's own
    assert _children_visible("auto", 1, {}) == ["0", "1"]
    assert _children_visible("cpu", 1, narrowed) == [""]
