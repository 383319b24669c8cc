"""Device placement: one worker process per device (and `per_device` processes per device).

Each child is an ordinary `regtune worker` process with ``CUDA_VISIBLE_DEVICES`` set to its one
device, so a trainer only ever sees "GPU 0". The parent forwards SIGTERM/SIGINT to its children
and waits for them: each abandons its trial cleanly.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from types import FrameType

__all__ = ["CPU", "child_env", "parse_devices", "run_children"]

log = logging.getLogger("regtune.worker")

CPU = "cpu"


class DeviceError(ValueError):
    """A ``--devices`` value that is not ``auto``, ``cpu`` or a list of GPU indices."""


def _visible_gpus() -> list[str]:
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except Exception:  # no CUDA build, no driver
        return []


def parse_devices(value: str | None) -> list[str]:
    """``None``/``cpu`` -> ``["cpu"]``; ``auto`` -> every visible GPU (or CPU); ``0,1`` -> GPUs."""
    if value is None or value.strip().lower() == CPU:
        return [CPU]
    if value.strip().lower() == "auto":
        return _visible_gpus() or [CPU]
    devices = [d.strip() for d in value.split(",") if d.strip()]
    bad = [d for d in devices if not d.isdigit()]
    if not devices or bad:
        raise DeviceError(
            f"--devices must be 'auto', 'cpu' or GPU indices like 0,1 (got {value!r})"
        )
    if len(set(devices)) != len(devices):
        raise DeviceError(f"--devices lists a device twice: {value!r}")
    return devices


TORCH_THREADS_ENV = "REGTUNE_TORCH_THREADS"


def share_cpu_threads(env: dict[str, str], n_processes: int) -> dict[str, str]:
    """`env` for one of `n_processes` local workers: the cores shared out among them.

    Torch's default is a thread per core in every process; N workers on the same cores would
    oversubscribe them (two workers on two cores ran 4x slower than one). An explicit
    REGTUNE_TORCH_THREADS wins.
    """
    env = dict(env)
    if n_processes > 1 and not env.get(TORCH_THREADS_ENV):
        env[TORCH_THREADS_ENV] = str(max(1, (os.cpu_count() or 1) // n_processes))
    return env


def child_env(device: str, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of the worker process bound to `device` (CPU: no GPU visible)."""
    env = dict(os.environ if base is None else base)
    env["CUDA_VISIBLE_DEVICES"] = "" if device == CPU else device
    return env


def accelerator_for(device: str) -> str:
    # "auto" lets Lightning fall back to CPU when the listed device is not a usable GPU
    return "cpu" if device == CPU else "auto"


def run_children(
    devices: Sequence[str], per_device: int, worker_args: Sequence[str], env: dict[str, str]
) -> int:
    """Start ``len(devices) * per_device`` workers and wait; returns the worst exit code."""
    children: list[subprocess.Popen[bytes]] = []
    env = share_cpu_threads(env, len(devices) * per_device)
    for device in devices:
        for _ in range(per_device):
            cmd = [
                sys.executable,
                "-m",
                "service.cli",
                "worker",
                *worker_args,
                "--accelerator",
                accelerator_for(device),
            ]
            children.append(subprocess.Popen(cmd, env=child_env(device, env)))
            log.info("started worker pid %d on device %s", children[-1].pid, device)

    def forward(signum: int, _frame: FrameType | None) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        codes = [child.wait() for child in children]
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    return max((abs(c) for c in codes), default=0)
