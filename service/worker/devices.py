"""Device placement: one worker process per device (and `per_device` processes per device).

Each child is an ordinary `regtune worker` process with ``CUDA_VISIBLE_DEVICES`` set to its one
device, so a trainer only ever sees "GPU 0". Device indices are this process's (torch's): under
an inherited ``CUDA_VISIBLE_DEVICES=2,3`` index 0 is card 2, and its child sees ``2``. The
parent (a `service.supervise.Supervisor`) forwards SIGTERM/SIGINT to its children and waits for
them: each abandons its trial cleanly. A child that crashes (an OOM kill, a non-zero exit) is
restarted on the same device with back-off.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

from service.supervise import ChildSpec, Supervisor, forwarding_signals, worker_command

__all__ = [
    "CPU",
    "DeviceError",
    "check_gpus",
    "child_env",
    "group_devices",
    "guard_gpu_memory",
    "parse_devices",
    "run_children",
    "share_gpu_memory",
]

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


def _unusable_reason(devices: Sequence[str]) -> str | None:
    """Why some of `devices` (GPU indices) cannot be used, or None when all can."""
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if not torch.cuda.is_available():
        build = "a CPU-only torch build" if torch.version.cuda is None else "no usable CUDA driver"
        return f"no CUDA device is usable here ({build}; torch.cuda.is_available() is False)"
    count = torch.cuda.device_count()
    missing = [d for d in devices if int(d) >= count]
    if missing:
        return f"GPU {', '.join(missing)} not found: {count} CUDA device(s) visible"
    return None


def check_gpus(devices: list[str], allow_cpu_fallback: bool = False) -> list[str]:
    """`devices` after checking that every listed GPU index is a usable CUDA device.

    A GPU that cannot be used fails the worker at start (a silent fall back to the CPU would
    show up only as a study running 100x slower); with `allow_cpu_fallback` the devices are kept
    (one process each, as placed) and such a process trains on the CPU, with a warning.

    Raises:
        DeviceError: a listed GPU is unusable and `allow_cpu_fallback` is false.
    """
    gpus = [d for d in devices if d != CPU]
    reason = _unusable_reason(gpus) if gpus else None
    if reason is None:
        return devices
    if not allow_cpu_fallback:
        raise DeviceError(
            f"--devices {','.join(gpus)}: {reason}; use --devices cpu or auto, "
            "or --allow-cpu-fallback to train on the CPU anyway"
        )
    log.warning("--devices %s: %s; running on the CPU (--allow-cpu-fallback)", gpus, reason)
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


def group_devices(devices: list[str], per_trial: int) -> list[str]:
    """`devices` cut into groups of `per_trial` (``["0,1", "2,3"]``): one worker process per
    group, each trial a DDP run over its group. CPU stays one entry per group.

    Raises:
        DeviceError: the groups would not come out even.
    """
    if per_trial == 1 or devices == [CPU]:
        return devices
    if len(devices) % per_trial:
        raise DeviceError(
            f"--devices-per-trial {per_trial} must divide the {len(devices)} devices listed"
        )
    groups = [devices[i : i + per_trial] for i in range(0, len(devices), per_trial)]
    return [CPU if CPU in group else ",".join(group) for group in groups]


MEMORY_FRACTION_ENV = "REGTUNE_GPU_MEMORY_FRACTION"


def share_gpu_memory(env: dict[str, str], trials_per_device: int) -> dict[str, str]:
    """`env` for one of `trials_per_device` workers packed on a GPU: each may allocate at most
    its share of the GPU's memory (an explicit REGTUNE_GPU_MEMORY_FRACTION wins)."""
    env = dict(env)
    if trials_per_device > 1 and not env.get(MEMORY_FRACTION_ENV):
        env[MEMORY_FRACTION_ENV] = f"{1 / trials_per_device:.6g}"
    return env


def guard_gpu_memory(fraction: float | None) -> bool:
    """Cap this process's CUDA allocations at `fraction` of the GPU's memory.

    With several trials packed on one GPU, a trial that outgrows its share fails with CUDA's
    out-of-memory error (recorded on that trial) instead of starving the trials beside it.
    Returns whether a cap was set (no CUDA or no fraction: nothing to do).
    """
    if fraction is None:
        return False
    import torch

    if not torch.cuda.is_available():
        return False
    for index in range(torch.cuda.device_count()):
        torch.cuda.set_per_process_memory_fraction(fraction, index)
    log.info("GPU memory capped at %.0f %% per trial process", fraction * 100)
    return True


VISIBLE_ENV = "CUDA_VISIBLE_DEVICES"


def visible_device_ids(device: str, visible: str | None) -> str:
    """`device` (GPU indices as this process numbers them: ``"1"``, a group ``"0,1"``) as the
    ``CUDA_VISIBLE_DEVICES`` entries of the cards they are.

    When the host already narrowed the GPUs (Slurm, Kubernetes: ``CUDA_VISIBLE_DEVICES=2,3``),
    torch here calls them 0 and 1: the child bound to index 0 must see ``2``, not the host's
    card 0, which belongs to someone else. Entries may be indices or GPU UUIDs; an index past
    the list (only with --allow-cpu-fallback, the GPU is unusable anyway) is kept as given.
    """
    entries = [e.strip() for e in (visible or "").split(",") if e.strip()]
    if not entries:
        return device
    return ",".join(
        entries[int(i)] if i.isdigit() and int(i) < len(entries) else i for i in device.split(",")
    )


def child_env(device: str, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of the worker process bound to `device` (CPU: no GPU visible)."""
    env = dict(os.environ if base is None else base)
    env[VISIBLE_ENV] = "" if device == CPU else visible_device_ids(device, env.get(VISIBLE_ENV))
    return env


def accelerator_for(device: str) -> str:
    """Lightning accelerator of the worker bound to `device` (a GPU index or a group "0,1").

    A usable GPU gets "gpu" (Lightning then fails rather than falls back); an unusable one only
    gets here under --allow-cpu-fallback (`check_gpus`), and "auto" trains on the CPU.
    """
    if device == CPU:
        return "cpu"
    return "gpu" if _unusable_reason(device.split(",")) is None else "auto"


def device_children(
    devices: Sequence[str], per_device: int, worker_args: Sequence[str], env: dict[str, str]
) -> list[ChildSpec]:
    """One `regtune worker` per device and slot, each seeing only its device."""
    env = share_cpu_threads(env, len(devices) * per_device)
    return [
        ChildSpec(
            worker_command(*worker_args, "--accelerator", accelerator_for(device)),
            child_env(device, env),
            label=f"worker on device {device}",
        )
        for device in devices
        for _ in range(per_device)
    ]


def run_children(
    devices: Sequence[str], per_device: int, worker_args: Sequence[str], env: dict[str, str]
) -> int:
    """Run ``len(devices) * per_device`` workers until each exits cleanly (crashed ones are
    restarted) or this process is told to stop; returns the worst last exit code."""
    supervisor = Supervisor(device_children(devices, per_device, worker_args, env))
    with forwarding_signals(supervisor):
        supervisor.start()
        try:
            return supervisor.wait()
        finally:
            supervisor.stop()
