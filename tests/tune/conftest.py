"""Helpers for `regtune tune` tests: tiny specs, the real CLI in a subprocess, a real server."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
import yaml
from typer.testing import CliRunner

from service.cli import app
from service.tune import output_schema

# a few hundred milliseconds per trial on CPU
TINY = {"max_epochs": 2, "n_samples": 120, "n_features": 6, "n_informative": 3}


def tiny_spec(name: str = "ci", n_trials: int = 2, **overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": name,
        "trainer": "synthetic-mlp",
        "trainer_config": dict(TINY),
        "search_space": {
            "dropout": {"low": 0.0, "high": 0.5},
            "weight_decay": {"low": 1e-6, "high": 1e-2, "log": True},
            "batch_size": {"choices": [16, 32]},
            "patience": {"fixed": 10},
        },
        "objective": {"metric": "val_loss", "direction": "minimize"},
        "sampler": {"name": "tpe", "seed": 0},
        "pruner": {"name": "none"},
        "budget": {"n_trials": n_trials},
    }
    spec.update(overrides)
    return spec


def write_spec(path: Path, spec: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(spec))
    return path


def tune(
    cwd: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`regtune tune ARGS` as a CI job runs it: a subprocess whose output is not a terminal."""
    base = dict(os.environ, TZ="UTC", REGTUNE_WORKER_POLL_INTERVAL="0.2")
    base.pop("REGTUNE_SERVER_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "service.cli", "tune", *args, "--poll-interval", "0.2"],
        cwd=cwd,
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=240,
    )


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def tune_in_process(cwd: Path, *args: str, monkeypatch: pytest.MonkeyPatch) -> Result:
    """The same command through typer's runner (fast: for checks that stop before any run)."""
    monkeypatch.chdir(cwd)
    monkeypatch.delenv("REGTUNE_SERVER_URL", raising=False)
    result = CliRunner().invoke(app, ["tune", *args])
    return Result(result.exit_code, result.stdout, result.stderr)


def load_valid_output(path: Path) -> dict[str, Any]:
    """The output JSON, validated against the shipped JSON Schema."""
    doc: dict[str, Any] = json.loads(path.read_text())
    jsonschema.Draft202012Validator(output_schema()).validate(doc)
    return doc


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, url: str, db: Path) -> None:
        self.url = url
        self.db = db

    def get(self, path: str, token: str | None = None) -> Any:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        response = httpx.get(f"{self.url}{path}", headers=headers, timeout=10)
        response.raise_for_status()
        return response.json()


def _serve(tmp: Path, workers: int, auth: str) -> Iterator[Server]:
    db = tmp / "regtune.db"
    port = free_port()
    env = dict(
        os.environ,
        TZ="UTC",
        REGTUNE_DATABASE_URL=f"sqlite:///{db}",
        REGTUNE_WORKER_POLL_INTERVAL="0.2",
        REGTUNE_AUTH=auth,
    )
    cmd = [sys.executable, "-m", "service.cli", "serve", "--port", str(port)]
    proc = subprocess.Popen([*cmd, "--workers", str(workers)], env=env, cwd=tmp)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, "regtune serve exited"
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not come up"
            time.sleep(0.2)
        yield Server(url, db)
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`regtune serve --workers 1` on a free port and an SQLite file (auth off)."""
    yield from _serve(tmp_path_factory.mktemp("server"), workers=1, auth="off")


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`regtune serve --workers 0` with authentication on."""
    yield from _serve(tmp_path_factory.mktemp("auth-server"), workers=0, auth="on")
