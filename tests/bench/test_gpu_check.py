"""bench/gpu_check.py: the dry run (CPU devices) in CI, the real check on a CUDA host."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "gpu_check.py"


def _run(*args: str, timeout: float) -> str:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def _assert_every_check_passed(out: str, ddp: bool) -> None:
    assert "FAILED" not in out
    assert "bf16-mixed: 1 trial complete" in out
    assert ("ddp: 1 trial over" in out) if ddp else ("ddp: skipped" in out)
    resumed = re.search(r"the retry resumed at epoch (\d+)", out)
    assert resumed is not None and int(resumed.group(1)) >= 1
    assert re.search(r"packing: 4 trial\(s\) per device: [\d.]+ trials/minute", out)
    assert re.search(r"^ratio: 4/1 packed trials per device = [\d.]+$", out, re.MULTILINE)
    assert "repeats: 6 runs (2 search + 4 confirmation, 2 packed per device) twice" in out


@pytest.mark.slow
def test_the_dry_run_passes_on_cpu_devices() -> None:
    out = _run("--dry-run", "--epochs", "4", "--trials", "2", timeout=600)
    assert out.startswith("gpu_check: dry run on CPU")
    _assert_every_check_passed(out, ddp=True)
    assert "memory: model" in out


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_the_gpu_check_passes_on_a_cuda_host() -> None:
    out = _run(timeout=8 * 60)
    _assert_every_check_passed(out, ddp=torch.cuda.device_count() > 1)
    assert "peak GPU memory per trial" in out


def test_workers_see_the_checkout_and_the_callers_python_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A GPU host with packages in a side folder (PYTHONPATH) runs the workers with both."""
    import gpu_check

    seen: dict[str, str] = {}

    def popen(cmd: list[str], env: dict[str, str], **kwargs: object) -> object:
        seen.update(env)
        return object()

    monkeypatch.setenv("PYTHONPATH", "/opt/side-packages")
    monkeypatch.setattr("gpu_check.subprocess.Popen", popen)
    worker = gpu_check._worker("sqlite:///x.db", 1)
    worker.log.close()
    assert seen["PYTHONPATH"].split(":") == [str(SCRIPT.parents[1]), "/opt/side-packages"]
