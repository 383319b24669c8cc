"""Test-only trainers for real worker processes: slow, NaN, out-of-memory, MemoryError.

`register()` adds them to the registry of the process it runs in; `_processes.regtune(...,
test_trainers=True)` calls it before the real CLI, so a `regtune worker` subprocess knows them
(the API does not need them: tests insert such studies straight into SQL).
"""

from __future__ import annotations

import time
from typing import Any

import torch
from pydantic import BaseModel

from trainers import registry
from trainers.builtin import SYNTHETIC_MLP
from trainers.registry import Trainer

TINY = {"max_epochs": 3, "n_samples": 120, "n_features": 6, "n_informative": 3}


class _Config(BaseModel):
    max_epochs: int = 3
    epoch_s: float = 0.0  # sleep at the end of every training epoch
    oom_at: int = 10**9  # batch sizes >= this "exhaust memory"


def _base(params: Any, config: _Config) -> tuple[Any, Any]:
    return SYNTHETIC_MLP.build(
        params, SYNTHETIC_MLP.validate_config({**TINY, "max_epochs": config.max_epochs})
    )


def _slow(params: Any, config: _Config) -> tuple[Any, Any]:
    module, data = _base(params, config)
    end = module.on_train_epoch_end

    def slow_end() -> None:
        time.sleep(config.epoch_s)
        end()

    module.on_train_epoch_end = slow_end
    return module, data


def _nan(params: Any, config: _Config) -> tuple[Any, Any]:
    module, data = _base(params, config)
    forward = module.backbone.forward  # the module calls its backbone directly
    module.backbone.forward = lambda x: forward(x) * float("nan")
    return module, data


def _nan_metric(params: Any, config: _Config) -> tuple[Any, Any]:
    """Trains normally but also logs `val_auc=NaN` every epoch (a plugin's undefined metric)."""
    module, data = _base(params, config)
    end = module.on_validation_epoch_end

    def nan_end() -> None:
        end()
        module.epoch_metrics["val_auc"] = float("nan")

    module.on_validation_epoch_end = nan_end
    return module, data


def _oom(params: Any, config: _Config) -> tuple[Any, Any]:
    module, data = _base(params, config)
    if params.batch_size is not None and params.batch_size >= config.oom_at:

        def forward(_x: torch.Tensor) -> torch.Tensor:
            raise torch.OutOfMemoryError(
                f"CUDA out of memory. Tried to allocate 2.00 GiB (batch size {params.batch_size})"
            )

        module.backbone.forward = forward
    return module, data


def _memory_error(params: Any, config: _Config) -> tuple[Any, Any]:
    module, data = _base(params, config)

    def forward(_x: torch.Tensor) -> torch.Tensor:
        raise MemoryError("cannot allocate the activations")

    module.backbone.forward = forward
    return module, data


def _trainer(name: str, build: Any, description: str) -> Trainer:
    return Trainer(
        name=name,
        description=description,
        config_model=_Config,
        build=build,
        metrics=SYNTHETIC_MLP.metrics,
    )


TEST_TRAINERS = {
    t.name: t
    for t in (
        _trainer("slow-mlp", _slow, "synthetic-mlp sleeping epoch_s per epoch"),
        _trainer("nan-mlp", _nan, "synthetic-mlp whose outputs (and losses) are NaN"),
        _trainer("nan-metric-mlp", _nan_metric, "synthetic-mlp also logging val_auc=NaN"),
        _trainer("oom-mlp", _oom, "synthetic-mlp raising torch.OutOfMemoryError at oom_at"),
        _trainer("memory-error-mlp", _memory_error, "synthetic-mlp raising MemoryError"),
    )
}


def register() -> None:
    """Make the test trainers resolvable in this process."""
    registry._cache = {**registry.available_trainers(), **TEST_TRAINERS}


def spec(name: str, trainer: str, n_trials: int, **config: Any) -> dict[str, Any]:
    """A study spec for one of the test trainers."""
    return {
        "name": name,
        "trainer": trainer,
        "trainer_config": {"max_epochs": 3, **config},
        "search_space": {
            "dropout": {"low": 0.0, "high": 0.5},
            "weight_decay": {"low": 1e-6, "high": 1e-2, "log": True},
            "batch_size": {"choices": [16, 128]},
            "patience": {"fixed": 100},
        },
        "sampler": {"name": "random", "seed": 0},
        "pruner": {"name": "none"},
        "budget": {"n_trials": n_trials},
        # no reference run: these tests count exactly n_trials trials (extra runs' crash
        # retries: tests/worker/test_extras.py)
        "reference": False,
    }
