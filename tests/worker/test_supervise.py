"""Local worker processes are supervised: a crashed one is restarted, a clean exit stays an exit.

Real processes throughout: small Python children for the supervisor's own rules, and a real
`regtune serve --workers 1` whose worker is SIGKILLed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import httpx
import pytest

from service.migrations import upgrade
from service.supervise import ChildSpec, Supervisor
from tests.reliability._processes import REPO, env_for
from tests.support import REGTUNE, serve_process, tiny_spec

T = TypeVar("T")


def _python(code: str) -> ChildSpec:
    return ChildSpec([sys.executable, "-c", code], dict(os.environ), label="child")


def test_a_clean_exit_is_not_restarted() -> None:
    supervisor = Supervisor([_python("pass")], first_backoff=0.01).start()
    assert supervisor.wait(interval=0.05) == 0
    assert supervisor.restarts == 0


def test_a_crashed_child_is_restarted_with_back_off_until_it_exits_cleanly(
    tmp_path: Path,
) -> None:
    # exits 3 on its first two runs, then 0: two restarts, then the supervisor is done
    runs = tmp_path / "runs"
    code = (
        "import pathlib, sys; p = pathlib.Path(sys.argv[1]); n = len(p.read_text()) "
        "if p.exists() else 0; p.write_text('x' * (n + 1)); sys.exit(3 if n < 2 else 0)"
    )
    spec = ChildSpec([sys.executable, "-c", code, str(runs)], dict(os.environ), "flaky")
    seen: list[tuple[str, int]] = []
    supervisor = Supervisor(
        [spec], first_backoff=0.05, on_restart=lambda label, code: seen.append((label, code))
    ).start()
    assert supervisor.wait(interval=0.02) == 0
    assert runs.read_text() == "xxx"
    assert supervisor.restarts == 2
    assert seen == [("flaky", 3), ("flaky", 3)]


def test_children_stopped_by_us_are_not_restarted() -> None:
    supervisor = Supervisor([_python("import time; time.sleep(60)")], first_backoff=0.01)
    supervisor.start()
    supervisor.send_signal(signal.SIGTERM)  # what `regtune worker --devices` forwards
    assert supervisor.wait(interval=0.05) == signal.SIGTERM
    assert supervisor.restarts == 0


def test_without_restart_a_crash_ends_the_child() -> None:
    supervisor = Supervisor([_python("raise SystemExit(5)")], restart=False).start()
    assert supervisor.wait(interval=0.05) == 5
    assert supervisor.restarts == 0


def _children(pid: int) -> list[int]:
    """Pids whose parent is `pid` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # the command name (in parentheses) may hold spaces: fields follow the last ')'
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def _wait_for(what: str, check: Callable[[], T], timeout: float = 120) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _restarts(base: str) -> float:
    text = httpx.get(f"{base}/metrics", timeout=10).text
    for line in text.splitlines():
        if line.startswith("regtune_worker_restarts_total "):
            return float(line.split()[1])
    raise AssertionError("regtune_worker_restarts_total is missing from /metrics")


@pytest.mark.slow
def test_serve_restarts_a_killed_worker_and_counts_it_in_metrics(migrated_db_url: str) -> None:
    env = env_for(migrated_db_url)
    with serve_process(
        "--workers", "1", env=env, cwd=REPO, start_new_session=True
    ) as running:  # fmt: skip
        base = running.url
        (first,) = _wait_for("the worker process", lambda: _children(running.proc.pid))
        assert _restarts(base) == 0
        os.kill(first, signal.SIGKILL)  # e.g. the kernel's OOM killer
        replacement = _wait_for(
            "a new worker process",
            lambda: [p for p in _children(running.proc.pid) if p != first],
        )
        assert replacement
        assert _restarts(base) == 1
        # the new worker runs a study submitted after the crash
        study = httpx.post(f"{base}/api/v1/studies", json=tiny_spec("after-kill", 2), timeout=30)
        assert study.status_code == 201, study.text
        study_id = study.json()["id"]
        _wait_for(
            "the study to complete",
            lambda: (
                httpx.get(f"{base}/api/v1/studies/{study_id}", timeout=10).json()["status"]
                == "completed"
            ),
            timeout=300,
        )


def test_worker_processes_that_finish_their_work_are_not_restarted(sqlite_url: str) -> None:
    """`regtune worker --trials-per-device 2 --exit-when-idle`: both children exit 0, and so
    does the parent (a restart would run them forever)."""
    upgrade(sqlite_url)
    result = subprocess.run(
        [*REGTUNE, "worker", "--trials-per-device", "2", "--exit-when-idle"],
        env=env_for(sqlite_url),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "restarting" not in result.stderr
