"""Fixtures of the trainers tests: the test plugin distribution and small study specs."""

from __future__ import annotations

import importlib
import importlib.metadata
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
import torch

from trainers import ObjectiveSpec, SearchSpace, available_trainers

PLUGIN_DIR = Path(__file__).resolve().parents[1] / "plugin_pkg"
PLUGIN_DIST = "regtune-test-plugin"


@pytest.fixture(scope="session")
def test_plugin() -> str:
    """Make sure the tiny plugin distribution is installed in this venv (editable).

    The tests then see it the way a worker sees a team's package: through its entry points.
    `tests/setup_env.py` may install it ahead of time; this installs it when it is missing.
    """
    try:
        dist = importlib.metadata.distribution(PLUGIN_DIST)
        declared = {"test-plugin-pl", "test-plugin-lightning", "insight-cnn"}
        if not declared <= {ep.name for ep in dist.entry_points}:
            # an install older than the pyproject's entry points: reinstall it
            raise importlib.metadata.PackageNotFoundError(PLUGIN_DIST)
    except importlib.metadata.PackageNotFoundError:
        pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "-e", str(PLUGIN_DIR)]
        # Without build isolation pip reuses the venv's setuptools (no download); fall back to
        # an isolated build where that setuptools cannot build it.
        if subprocess.run([*pip, "--no-build-isolation"], check=False).returncode != 0:
            subprocess.run(pip, check=True)
        importlib.invalidate_caches()
    try:
        importlib.import_module("regtune_test_plugin")
    except ImportError:
        # Installed during this run: the editable finder's .pth is only read at start-up.
        sys.path.insert(0, str(PLUGIN_DIR))
    available_trainers(refresh=True)
    return PLUGIN_DIST


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread() -> Iterator[None]:
    # Tiny models: one thread is as fast, and it does not collapse when other processes share
    # the cores (two spinning OpenMP threads per process on a busy 2-core machine do).
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _quiet_optuna() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def fixed_space(**values: float) -> SearchSpace:
    """A search space where every given parameter is fixed."""
    return SearchSpace.model_validate({k: {"fixed": v} for k, v in values.items()})


def synthetic_spec(space: SearchSpace | None = None, **config: object) -> ObjectiveSpec:
    """A seconds-long synthetic-mlp study spec (tiny data, tiny network)."""
    base: dict[str, object] = {
        "max_epochs": 4,
        "n_samples": 240,
        "n_features": 8,
        "n_informative": 4,
        "hidden_sizes": [16],
        "learning_rate": 0.01,
    }
    base.update(config)
    return ObjectiveSpec(
        trainer="synthetic-mlp", trainer_config=base, search_space=space or SearchSpace()
    )
