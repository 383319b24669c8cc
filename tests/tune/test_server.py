"""`regtune tune --server`: against a real `regtune serve --workers 1` on an SQLite file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from service.auth import TokenScope, create_token
from service.db import make_engine, make_session_factory, unit_of_work
from tests.tune.conftest import Server, load_valid_output, tiny_spec, write_spec

pytestmark = pytest.mark.slow


def _interruptible() -> None:
    """Ctrl-C as a terminal delivers it: a runner that started the tests in the background
    (a non-interactive shell's `&`) ignores SIGINT, and Python keeps an inherited SIG_IGN."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start_tune(cwd: Path, *args: str) -> subprocess.Popen[str]:
    env = dict(os.environ, TZ="UTC")
    cmd = [sys.executable, "-m", "service.cli", "tune", *args, "--poll-interval", "0.2"]
    return subprocess.Popen(
        cmd,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_interruptible,
    )


def test_server_mode_submits_follows_and_writes_the_best(server: Server, tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "spec.yaml", tiny_spec(name="ignored", n_trials=2))
    proc = _start_tune(
        tmp_path, str(spec), "--server", server.url, "--name", "pr-42",
        "--output", "best.json", "--summary", "summary.md", "--min-score", "0",
    )  # fmt: skip
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err
    doc = load_valid_output(tmp_path / "best.json")
    assert doc["mode"] == "server" and doc["server"] == server.url
    assert doc["study_name"] == "pr-42"  # --name overrides the spec's name
    # the output is what the server says about the study
    best = server.get(f"/api/v1/studies/{doc['study_id']}/best")
    assert best["final"] is True
    assert doc["best_value"] == best["value"]
    assert doc["best_trial_number"] == best["trial_number"]
    assert doc["test_metrics"] == best["test_metrics"]
    assert doc["counts"]["complete"] + doc["counts"]["pruned"] == 2
    assert "trial 0 " in err and "[2/2]" in err
    assert "pr-42" in (tmp_path / "summary.md").read_text()


def test_ctrl_c_cancels_the_remote_study_and_exits_3(server: Server, tmp_path: Path) -> None:
    long = dict(tiny_spec()["trainer_config"], max_epochs=500)
    spec = write_spec(tmp_path / "spec.yaml", tiny_spec(name="interrupted", n_trials=50,
                                                        trainer_config=long))  # fmt: skip
    proc = _start_tune(tmp_path, str(spec), "--server", server.url)
    assert proc.stderr is not None
    headline = proc.stderr.readline()  # printed once the study was submitted
    assert "'interrupted'" in headline, headline
    study_id = int(headline.split()[1])
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 3, err
    assert "interrupted" in err and "Traceback" not in err
    assert server.get(f"/api/v1/studies/{study_id}")["status"] == "cancelled"


def test_name_taken_on_the_server_exits_2(server: Server, tmp_path: Path) -> None:
    body = tiny_spec(name="twice", n_trials=1)
    assert httpx.post(f"{server.url}/api/v1/studies", json=body, timeout=10).status_code == 201
    spec = write_spec(tmp_path / "spec.yaml", body)
    second = _start_tune(tmp_path, str(spec), "--server", server.url)
    _, err = second.communicate(timeout=60)
    assert second.returncode == 2
    assert "HTTP 409" in err and "--name" in err


def test_warm_start_on_a_server_runs_the_previous_best_as_trial_0(
    server: Server, tmp_path: Path
) -> None:
    prev = {
        "schema_version": 1,
        "study_name": "main",
        "metric": "val_loss",
        "direction": "minimize",
        "best_value": 0.5,
        # l1 is not searched by this spec: it is left out, not sent
        "best_params": {"dropout": 0.125, "weight_decay": 0.001, "batch_size": 32, "l1": 0.1},
    }
    (tmp_path / "prev.json").write_text(json.dumps(prev))
    spec = write_spec(tmp_path / "spec.yaml", tiny_spec(name="warm-remote", n_trials=2))
    proc = _start_tune(
        tmp_path, str(spec), "--server", server.url, "--warm-start", "prev.json",
        "--output", "best.json",
    )  # fmt: skip
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err
    doc = load_valid_output(tmp_path / "best.json")
    trial0 = server.get(f"/api/v1/studies/{doc['study_id']}/trials/0")
    assert trial0["params"]["dropout"] == 0.125
    assert trial0["params"]["weight_decay"] == 0.001
    assert trial0["params"]["batch_size"] == 32


def test_refused_token_exits_4(auth_server: Server, tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "spec.yaml", tiny_spec(name="no-entry", n_trials=1))
    proc = _start_tune(tmp_path, str(spec), "--server", auth_server.url, "--token", "rgt_bogus")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 4, err
    assert "the server refused the token (HTTP 401" in err and "Traceback" not in err


def test_the_token_and_reason_come_from_dotenv_and_the_timeout(
    auth_server: Server, tmp_path: Path
) -> None:
    """`.env`'s REGTUNE_TOKEN is used as `regtune submit` uses it (before: tune sent no token,
    exit 4); a study tune ended by --timeout says why in `status_reason` (was null)."""
    engine = make_engine(f"sqlite:///{auth_server.db}")
    with unit_of_work(make_session_factory(engine)) as session:
        _info, secret = create_token(session, "tune-dotenv", TokenScope.write)
    engine.dispose()
    (tmp_path / ".env").write_text(f"REGTUNE_TOKEN={secret}\n")
    spec = write_spec(tmp_path / "spec.yaml", tiny_spec(name="dotenv", n_trials=1))
    # no worker on this server: the study waits until --timeout cancels it
    args = [str(spec), "--server", auth_server.url, "--timeout", "2", "-o", "out.json"]
    proc = _start_tune(tmp_path, *args)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 3, err
    assert "timed out after 2 s" in err
    doc = load_valid_output(tmp_path / "out.json")
    assert doc["status"] == "cancelled" and "timed out after 2 s" in doc["status_reason"]
