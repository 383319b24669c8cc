"""Fixtures of the trainers tests: the test plugin distribution and small study specs."""

from __future__ import annotations

from collections.abc import Iterator

import optuna
import pytest
import torch

from trainers import ObjectiveSpec, SearchSpace


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
