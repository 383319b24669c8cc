"""Real `regtune` processes for the reliability and auth tests: API servers, workers, CLI."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]
# Registers the test-only trainers, then runs the real CLI (see tests/reliability/trainers.py).
_CLI_WITH_TEST_TRAINERS = (
    "import tests.reliability.trainers as t; t.register(); "
    "from service.cli import app; app(prog_name='regtune')"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def env_for(url: str, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        TZ="UTC",
        REGTUNE_DATABASE_URL=url,
        REGTUNE_WORKER_POLL_INTERVAL="0.2",
        REGTUNE_HEARTBEAT_INTERVAL="1",
        REGTUNE_HEARTBEAT_GRACE_PERIOD="3",
        PYTHONPATH=str(REPO),
    )
    env.update(extra)
    return env


def regtune(
    url: str, *args: str, test_trainers: bool = False, **env: str
) -> subprocess.Popen[bytes]:
    """`regtune ARGS` as a real process (optionally with the test-only trainers registered)."""
    head = ["-c", _CLI_WITH_TEST_TRAINERS] if test_trainers else ["-m", "service.cli"]
    return subprocess.Popen(
        [sys.executable, *head, *args], env=env_for(url, **env), cwd=REPO, start_new_session=True
    )


def run_cli(url: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service.cli", *args],
        env=env_for(url, **env),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def wait_healthy(base: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the server exited with {proc.returncode}"
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{base} did not become healthy")


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 30) -> None:
    """Signal a process we started (by pid) and reap it; SIGKILL if it lingers."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def server(
    url: str, *args: str, workers: int = 0, test_trainers: bool = False, **env: str
) -> Iterator[str]:
    """`regtune serve --workers N` on a free port; yields its base URL; stopped afterwards."""
    port = free_port()
    proc = regtune(
        url,
        "serve",
        "--port",
        str(port),
        "--workers",
        str(workers),
        *args,
        test_trainers=test_trainers,
        **env,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base, proc)
        yield base
    finally:
        stop(proc)


def stop_all(procs: Sequence[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        stop(p)
