"""What the objective keeps on an accelerator: the best epoch's weights live in CPU memory.

No GPU here: the module's weights are torch "fake" tensors that report device ``cuda:0``
(FakeTensorMode allocates nothing and needs no CUDA), which is what the tracker would see on a GPU.
"""

from __future__ import annotations

from types import SimpleNamespace

import optuna
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from trainers.objective import ObjectiveSpec, _EpochTracker, host_copy


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
