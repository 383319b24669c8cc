"""Real `regtune` processes for the reliability and auth tests: API servers, workers, CLI."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from tests.support import serve_process, server_env, stop_process

REPO = Path(__file__).resolve().parents[2]
# Registers the test-only trainers, then runs the real CLI (see tests/reliability/trainers.py).
_CLI_WITH_TEST_TRAINERS = (
    "import tests.reliability.trainers as t; t.register(); "
    "from service.cli import app; app(prog_name='regtune')"
)


def env_for(url: str, **extra: str) -> dict[str, str]:
    defaults = {
        "REGTUNE_HEARTBEAT_INTERVAL": "1",
        "REGTUNE_HEARTBEAT_GRACE_PERIOD": "3",
        "PYTHONPATH": str(REPO),
    }
    return server_env(url, **{**defaults, **extra})  # `extra` may override the defaults


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


@contextmanager
def server(
    url: str, *args: str, workers: int = 0, test_trainers: bool = False, **env: str
) -> Iterator[str]:
    """`regtune serve --workers N` on a free port; yields its base URL; stopped afterwards."""
    head = ("-c", _CLI_WITH_TEST_TRAINERS) if test_trainers else ("-m", "service.cli")
    with serve_process(
        "--workers",
        str(workers),
        *args,
        env=env_for(url, **env),
        cwd=REPO,
        command=(sys.executable, *head),
        start_new_session=True,
    ) as running:
        yield running.url


# the reliability tests' short name for it
stop = stop_process


def stop_all(procs: Sequence[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        stop(p)
