"""Helpers for `regtune tune` tests: tiny specs, the real CLI in a subprocess, a real server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
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
from tests import support
from tests.support import TINY_CONFIG, serve_process, server_env


def tiny_spec(name: str = "ci", n_trials: int = 2, **overrides: Any) -> dict[str, Any]:
    """`tests.support.tiny_spec` as the tune tests use it: 2 epochs (a few hundred milliseconds
    per trial), TPE, the objective spelled out as a CI spec file would, and no confirmation."""
    fields: dict[str, Any] = {
        "trainer_config": {**TINY_CONFIG, "max_epochs": 2},
        "objective": {"metric": "val_loss", "direction": "minimize"},
        "sampler": {"name": "tpe", "seed": 0},
        # single runs unless a test asks for repeats (regtune tune's own default re-trains the
        # best config 4 more times: tests/tune/test_gate.py checks that default)
        "confirm": None,
    }
    return support.tiny_spec(name, n_trials, **{**fields, **overrides})


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
    env = server_env(f"sqlite:///{db}", REGTUNE_AUTH=auth)
    with serve_process("--workers", str(workers), env=env, cwd=tmp, stop_timeout=60) as running:
        yield Server(running.url, db)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`regtune serve --workers 1` on a free port and an SQLite file (auth off)."""
    yield from _serve(tmp_path_factory.mktemp("server"), workers=1, auth="off")


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`regtune serve --workers 0` with authentication on."""
    yield from _serve(tmp_path_factory.mktemp("auth-server"), workers=0, auth="on")
