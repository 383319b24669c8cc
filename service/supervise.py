"""Local worker processes: start, watch, restart after a crash, forward signals, stop.

`regtune serve --workers N`, `regtune worker --devices ...` and `regtune tune` (local mode) all
run `regtune worker` children through a `Supervisor`. A child that dies abnormally (a non-zero
exit, or a signal this process did not send, e.g. the kernel's OOM killer) is started again
after a back-off that doubles with each crash in a row (capped); a child that exits 0 (its
`--once`/`--exit-when-idle`/`--max-trials` work done, or its own clean shutdown) stays exited.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

__all__ = ["ChildSpec", "Supervisor", "forwarding_signals", "worker_command"]

log = logging.getLogger("regtune.supervise")

FIRST_BACKOFF_S = 1.0
MAX_BACKOFF_S = 60.0
# a child that ran this long before crashing starts its back-off from the beginning again
HEALTHY_AFTER_S = 60.0
POLL_S = 0.5


def worker_command(*args: str) -> list[str]:
    """`regtune worker ARGS` run by this Python."""
    return [sys.executable, "-m", "service.cli", "worker", *args]


@dataclass
class ChildSpec:
    """How to start one child (the same way on every restart)."""

    cmd: Sequence[str]
    env: dict[str, str]
    label: str = "worker"
    log_path: Path | None = None  # stdout and stderr go here instead of ours


@dataclass
class _Child:
    spec: ChildSpec
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    crashes_in_a_row: int = 0
    restart_at: float | None = None  # when a crashed child is due to start again
    done: bool = False  # exited cleanly, or stopped by us


@dataclass
class Supervisor:
    """Runs `children` and restarts those that crash (when `restart` is true).

    `on_restart(label, returncode)` is called for every restart (metrics). `poll()` does one
    round of checks; `watch()` polls from a background thread; `wait()` polls in the caller's
    thread until every child exited cleanly or `stop()` was called.
    """

    children: Sequence[ChildSpec]
    restart: bool = True
    first_backoff: float = FIRST_BACKOFF_S
    max_backoff: float = MAX_BACKOFF_S
    healthy_after: float = HEALTHY_AFTER_S
    on_restart: Callable[[str, int], None] | None = None
    restarts: int = 0
    _children: list[_Child] = field(default_factory=list, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)
    _stopping: threading.Event = field(default_factory=threading.Event, init=False)
    _thread: threading.Thread | None = field(default=None, init=False)

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> Supervisor:
        with self._lock:
            self._children = [_Child(spec) for spec in self.children]
            for child in self._children:
                self._launch(child)
        return self

    def _launch(self, child: _Child) -> None:
        spec = child.spec
        if spec.log_path is not None:
            # a fresh log per run; a restarted child appends to its predecessor's
            with spec.log_path.open("ab" if child.process else "wb") as out:
                process = subprocess.Popen(
                    list(spec.cmd), env=spec.env, stdout=out, stderr=subprocess.STDOUT
                )
        else:
            process = subprocess.Popen(list(spec.cmd), env=spec.env)
        child.process = process
        child.started = time.monotonic()
        child.restart_at = None
        log.info("started %s (pid %d)", spec.label, process.pid)

    @property
    def processes(self) -> list[subprocess.Popen[bytes]]:
        """The current process of each child (the latest one after a restart)."""
        with self._lock:
            return [c.process for c in self._children if c.process is not None]

    def returncodes(self) -> list[int | None]:
        with self._lock:
            return [c.process.poll() if c.process else None for c in self._children]

    # --- watching -------------------------------------------------------------------------

    def poll(self) -> bool:
        """Check every child once (restarting due ones); False once nothing is left to run."""
        now = time.monotonic()
        alive = False
        with self._lock:
            for child in self._children:
                if child.done or child.process is None:
                    continue
                code = child.process.poll()
                if code is None:
                    alive = True
                    continue
                if self._stopping.is_set() or code == 0 or not self.restart:
                    child.done = True
                    continue
                alive = True
                if child.restart_at is None:
                    self._schedule(child, code, now)
                elif now >= child.restart_at:
                    try:
                        self._launch(child)
                    except OSError:  # cannot fork now (memory, pids): try again later
                        log.exception("cannot restart %s", child.spec.label)
                        self._schedule(child, code, now)
                        continue
                    self.restarts += 1
                    if self.on_restart is not None:
                        self.on_restart(child.spec.label, code)
        return alive

    def _schedule(self, child: _Child, code: int, now: float) -> None:
        if now - child.started >= self.healthy_after:
            child.crashes_in_a_row = 0
        child.crashes_in_a_row += 1
        delay = min(self.max_backoff, self.first_backoff * 2 ** (child.crashes_in_a_row - 1))
        child.restart_at = now + delay
        assert child.process is not None
        how = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
        log.warning(
            "%s (pid %d) died with %s; restarting it in %.0f s",
            child.spec.label,
            child.process.pid,
            how,
            delay,
        )

    def watch(self, interval: float = POLL_S) -> Supervisor:
        """Poll from a daemon thread until `stop()` (for a caller busy with something else)."""

        def loop() -> None:
            while not self._stopping.wait(interval):
                self.poll()

        self._thread = threading.Thread(target=loop, name="regtune-supervisor", daemon=True)
        self._thread.start()
        return self

    def wait(self, interval: float = POLL_S) -> int:
        """Poll until no child is left to run; the worst exit code of the last processes."""
        while self.poll():
            time.sleep(interval)
        codes = [abs(c) for c in self.returncodes() if c is not None]
        return max(codes, default=0)

    # --- stopping -------------------------------------------------------------------------

    def send_signal(self, signum: int) -> None:
        """Forward `signum` to every live child; SIGTERM/SIGINT also end all restarts."""
        if signum in (signal.SIGTERM, signal.SIGINT):
            self._stopping.set()
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signum)

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM each child (it abandons its trial cleanly), wait; SIGKILL stragglers."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()
        processes = self.processes
        for process in processes:
            if process.poll() is None:
                process.terminate()
        deadline = time.monotonic() + timeout
        for process in processes:
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@contextmanager
def forwarding_signals(supervisor: Supervisor) -> Iterator[None]:
    """While inside, SIGTERM/SIGINT to this process go to the children (which then stop)."""

    def forward(signum: int, _frame: FrameType | None) -> None:
        supervisor.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
