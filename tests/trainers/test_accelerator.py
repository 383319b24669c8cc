"""How a trial uses its device: best weights in CPU memory, the spec's precision in Lightning.

No GPU here: the module's weights are torch "fake" tensors that report device ``cuda:0``
(FakeTensorMode allocates nothing and needs no CUDA), which is what the tracker would see on a GPU.
"""

from __future__ import annotations

import math
from dataclasses import replace
from types import SimpleNamespace
from typing import Any

import optuna
import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from tests.trainers.conftest import synthetic_spec
from trainers import RegularizationParams, registry, run_trial
from trainers.builtin import SYNTHETIC_MLP
from trainers.objective import ObjectiveSpec, _EpochTracker, host_copy
from trainers.registry import Trainer


class _ModuleOnGpu:
    """Stands for a LightningModule whose weights live on ``cuda:0``."""

    def __init__(self, mode: FakeTensorMode) -> None:
        with mode:
            self.weights = {
                "net.0.weight": torch.empty(64, 32, device="cuda"),
                "net.0.bias": torch.empty(64, device="cuda"),
            }

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.weights)


def test_the_best_epochs_weights_are_not_copied_on_the_accelerator() -> None:
    mode = FakeTensorMode()
    module = _ModuleOnGpu(mode)
    assert {t.device.type for t in module.state_dict().values()} == {"cuda"}
    trial = optuna.create_study().ask()
    tracker = _EpochTracker(trial, ObjectiveSpec(trainer="digits-mlp"), None, patience=3)
    trainer = SimpleNamespace(
        current_epoch=0, callback_metrics={"val_loss": 0.5}, should_stop=False
    )

    with mode:
        tracker.on_epoch(trainer, module)
        trainer.current_epoch, trainer.callback_metrics = 1, {"val_loss": 0.4}
        tracker.on_epoch(trainer, module)

    assert tracker.best is not None and tracker.best.epoch == 1
    assert tracker.best_state is not None
    assert set(tracker.best_state) == set(module.weights)
    # every kept tensor is in host memory, none is a second copy on the accelerator
    assert {t.device.type for t in tracker.best_state.values()} == {"cpu"}
    assert [t.shape for t in tracker.best_state.values()] == [
        t.shape for t in module.weights.values()
    ]


def test_host_copy_does_not_share_memory_with_cpu_weights() -> None:
    weights = {"w": torch.ones(3)}
    copy = host_copy(weights)
    weights["w"].add_(1.0)  # the next epoch's update must not change the kept best weights
    assert copy["w"].tolist() == [1.0, 1.0, 1.0]


def test_the_precision_reaches_the_lightning_trainer(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []
    autocast: list[bool] = []

    def build(params: RegularizationParams, config: Any) -> tuple[Any, Any]:
        module, data = SYNTHETIC_MLP.build(params, config)
        step = module.training_step

        def training_step(*args: Any, **kwargs: Any) -> Any:
            seen.append(str(module.trainer.precision))
            autocast.append(torch.is_autocast_enabled("cpu"))
            return step(*args, **kwargs)

        module.training_step = training_step
        return module, data

    probe = Trainer(
        name="precision-probe",
        description="synthetic-mlp that records the Trainer's precision (tests only)",
        config_model=SYNTHETIC_MLP.config_model,
        build=build,
        metrics=SYNTHETIC_MLP.metrics,
    )
    monkeypatch.setattr(registry, "_cache", {**registry.available_trainers(), probe.name: probe})
    spec = replace(synthetic_spec(max_epochs=2), trainer=probe.name, precision="bf16-mixed")

    outcome = run_trial(optuna.create_study().ask(), spec)

    assert set(seen) == {"bf16-mixed"} and all(autocast)
    assert outcome.epochs_run == 2 and math.isfinite(outcome.value)
