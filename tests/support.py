"""Plain helpers shared by several test packages (not fixtures): tiny specs, settings, real servers.

Import them as `from tests.support import ...`. Package-specific variations stay in each package's
own conftest or helper module; only logic that really is the same lives here.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from service.config import Settings
from service.db import make_engine, make_session_factory
from service.worker.optimization import open_storage
from service.worker.stale import sweep_with

# a few milliseconds per epoch on CPU
TINY_CONFIG = {"max_epochs": 3, "n_samples": 120, "n_features": 6, "n_informative": 3}
# `python -m service.cli`: the real `regtune` command, whichever venv runs the tests
REGTUNE = (sys.executable, "-m", "service.cli")
# how much of a server's output a start-up failure quotes
_TAIL_CHARS = 4000


def tiny_spec(name: str = "tiny", n_trials: int = 3, **overrides: Any) -> dict[str, Any]:
    """A valid study spec whose trials train in well under a second each.

    `overrides` replace whole top-level fields (e.g. `sampler={...}`), not parts of them.
    """
    spec: dict[str, Any] = {
        "name": name,
        "trainer": "synthetic-mlp",
        "trainer_config": dict(TINY_CONFIG),
        "search_space": {
            "dropout": {"low": 0.0, "high": 0.5},
            "weight_decay": {"low": 1e-6, "high": 1e-2, "log": True},
            "batch_size": {"choices": [16, 32]},
            "patience": {"fixed": 10},
        },
        "sampler": {"name": "random", "seed": 0},
        "pruner": {"name": "none"},
        "budget": {"n_trials": n_trials},
        # no reference run: these studies run exactly n_trials trials (tests/worker/test_extras)
        "reference": False,
    }
    spec.update(overrides)
    return spec


def settings_for(url: str, **overrides: Any) -> Settings:
    """Service settings on `url` with fast worker polling and heartbeats, migrations off."""
    values: dict[str, Any] = {
        "database_url": url,
        "auto_migrate": False,
        "worker_poll_interval": 0.1,
        "heartbeat_interval": 1,
        "heartbeat_grace_period": 5,
    }
    values.update(overrides)
    return Settings(**values)


def server_env(database_url: str, **extra: str) -> dict[str, str]:
    """The environment of a `regtune serve`/`worker` subprocess in a test: this process's, UTC,
    the given database, a fast worker poll, then `extra` (e.g. ``REGTUNE_AUTH="off"``)."""
    env = dict(
        os.environ,
        TZ="UTC",
        REGTUNE_DATABASE_URL=database_url,
        REGTUNE_WORKER_POLL_INTERVAL="0.2",
    )
    env.update(extra)
    return env


def free_port() -> int:
    """A loopback TCP port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tail(log: Path | None) -> str:
    if log is None:
        return ""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return ""
    return f"\n--- last output of the server ---\n{text[-_TAIL_CHARS:]}" if text else ""


def wait_healthy(
    base: str,
    running: subprocess.Popen[bytes] | threading.Thread | None = None,
    timeout: float = 60,
    log: Path | None = None,
) -> None:
    """Poll `base`/healthz until it answers 200.

    Fails at once if `running` (the server's process or thread) has ended, and after `timeout`
    seconds otherwise; the error quotes the end of `log` (the server's output) when given.
    """
    deadline = time.monotonic() + timeout
    while True:
        if isinstance(running, subprocess.Popen) and running.poll() is not None:
            raise AssertionError(f"the server exited with {running.returncode}{_tail(log)}")
        if isinstance(running, threading.Thread) and not running.is_alive():
            raise AssertionError(f"the server thread for {base} ended{_tail(log)}")
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass  # not listening yet
        if time.monotonic() >= deadline:
            raise AssertionError(f"{base} did not become healthy in {timeout:g} s{_tail(log)}")
        time.sleep(0.1)


def stop_process(
    proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 30
) -> None:
    """Signal a process we started (by pid) and reap it; SIGKILL if it lingers."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class ServerProcess:
    """A running `regtune serve`: its base URL, its process, and the file holding its output."""

    url: str
    proc: subprocess.Popen[bytes]
    log: Path


@contextmanager
def serve_process(
    *args: str,
    env: Mapping[str, str],
    cwd: Path,
    command: Sequence[str] = REGTUNE,
    start_new_session: bool = False,
    timeout: float = 60,
    stop_timeout: float = 30,
) -> Iterator[ServerProcess]:
    """`COMMAND serve --port PORT ARGS` as a real process on a free port, healthy before yielding.

    The server's stdout and stderr go to a file, not a pipe (a full pipe would block the server);
    a start-up failure quotes its end, and on the way out the whole output is copied to this
    process's stderr, where pytest shows it with a failing test. Stopped with SIGTERM afterwards.
    """
    port = free_port()
    fd, name = tempfile.mkstemp(prefix="regtune-serve-", suffix=".log")
    log = Path(name)
    try:
        with os.fdopen(fd, "wb") as out:
            proc = subprocess.Popen(
                [*command, "serve", "--port", str(port), *args],
                env=dict(env),
                cwd=cwd,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=start_new_session,
            )
        server = ServerProcess(f"http://127.0.0.1:{port}", proc, log)
        try:
            wait_healthy(server.url, proc, timeout, log)
            yield server
        finally:
            stop_process(proc, timeout=stop_timeout)
            sys.stderr.write(log.read_text(errors="replace"))
    finally:
        log.unlink(missing_ok=True)


@contextmanager
def serve_in_thread(app: Any, timeout: float = 30) -> Iterator[str]:
    """Run `app` under uvicorn on a free loopback port in a thread; yields its base URL."""
    port = free_port()
    uv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base, thread, timeout)
        yield base
    finally:
        uv.should_exit = True
        thread.join(timeout=10)


def sweep_once(url: str, settings: Settings) -> int:
    """One stale-trial sweep of the database at `url` (what the API's sweeper and every worker
    run), on engines opened and closed here; returns how many trials were reconciled."""
    engine = make_engine(url)
    storage = open_storage(url, settings)
    try:
        return sweep_with(make_session_factory(engine), storage, settings)
    finally:
        storage.remove_session()
        storage.engine.dispose()
        engine.dispose()
