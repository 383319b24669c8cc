"""Each regularizer has its intended effect on the built-in module."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import EarlyStopping
from lightning.pytorch.loggers import CSVLogger
from torch import nn

from trainers import RegularizationParams
from trainers.builtin import SyntheticConfig, build_mlp
from trainers.data import InMemoryDataModule
from trainers.module import (
    EPOCH_METRICS,
    RegularizedClassifier,
    mlp,
    near_zero_fraction,
    penalized_weights,
)


def _module(**params: float) -> RegularizedClassifier:
    torch.manual_seed(0)
    p = RegularizationParams(**params)
    return RegularizedClassifier(mlp(6, [12, 12], 3, p.dropout), p)


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(32, 6, generator=g), torch.randint(0, 3, (32,), generator=g)


def test_l1_penalizes_weights_not_biases() -> None:
    module = _module(l1=0.01)
    x, y = _batch()
    data_loss, total = module.training_loss(x, y)
    linears = [m for m in module.backbone.modules() if isinstance(m, nn.Linear)]
    expected = sum(float(m.weight.detach().abs().sum()) for m in linears)
    assert float((total - data_loss).detach()) == pytest.approx(0.01 * expected, rel=1e-5)
    # biases (and any 1-D norm parameter) are not in the penalty
    with torch.no_grad():
        for m in linears:
            m.bias.add_(100.0)
    assert float(module.l1_penalty().detach()) == pytest.approx(expected, rel=1e-5)
    assert {id(p) for p in penalized_weights(module.backbone)} == {id(m.weight) for m in linears}


def test_weight_decay_applies_to_weights_only() -> None:
    module = _module(weight_decay=0.3)
    optimizer = module.configure_optimizers()
    assert isinstance(optimizer, torch.optim.AdamW)
    decayed, plain = optimizer.param_groups
    assert decayed["weight_decay"] == 0.3 and all(p.ndim == 2 for p in decayed["params"])
    assert plain["weight_decay"] == 0.0 and all(p.ndim == 1 for p in plain["params"])


def test_label_smoothing_changes_the_training_loss_only() -> None:
    x, y = _batch()
    plain, smooth = _module(), _module(label_smoothing=0.3)
    with torch.no_grad():
        plain_loss, _ = plain.training_loss(x, y)
        smooth_loss, _ = smooth.training_loss(x, y)
    assert float(plain_loss) == pytest.approx(float(F.cross_entropy(plain(x), y).detach()))
    assert float(smooth_loss) == pytest.approx(
        float(F.cross_entropy(smooth(x), y, label_smoothing=0.3).detach())
    )
    assert float(smooth_loss) != pytest.approx(float(plain_loss), abs=1e-4)


def test_dropout_is_on_in_training_and_off_in_eval() -> None:
    module = _module(dropout=0.5)
    assert sum(isinstance(m, nn.Dropout) and m.p == 0.5 for m in module.backbone.modules()) == 2
    x, _ = _batch()
    module.train()
    assert not torch.equal(module(x), module(x))
    module.eval()
    assert torch.equal(module(x), module(x))
    assert not any(isinstance(m, nn.Dropout) for m in _module(dropout=0.0).backbone.modules())


def _trainer(epochs: int = 8, **kwargs: Any) -> pl.Trainer:
    options: dict[str, Any] = {
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
    }
    options.update(kwargs)
    return pl.Trainer(max_epochs=epochs, **options)


_SMALL = SyntheticConfig(
    n_samples=240, n_features=8, n_informative=4, hidden_sizes=(32,), learning_rate=0.01
)


def _trained(**params: float) -> tuple[RegularizedClassifier, dict[str, float]]:
    """Fit a small synthetic-mlp module for 8 epochs; return it and its last epoch's metrics.

    No logger, no callback: the metrics are read from ``module.epoch_metrics``.
    """
    module, datamodule = build_mlp(
        "synthetic", RegularizationParams(batch_size=32, **params), _SMALL
    )
    trainer = _trainer()
    trainer.fit(module, datamodule=datamodule)
    return module, dict(module.epoch_metrics)


def test_l1_drives_weights_toward_zero() -> None:
    plain, plain_metrics = _trained(l1=0.0)
    sparse, sparse_metrics = _trained(l1=1e-2)
    # Adam keeps L1-penalized weights jittering around 0 at about the learning rate's scale, so
    # the near-zero share grows moderately while the mean |w| collapses.
    assert sparse_metrics["near_zero_frac"] > plain_metrics["near_zero_frac"] + 0.04
    assert near_zero_fraction(penalized_weights(sparse.backbone)) == pytest.approx(
        sparse_metrics["near_zero_frac"], abs=1e-6
    )
    mean_abs = [
        torch.cat([w.detach().abs().flatten() for w in penalized_weights(m.backbone)]).mean()
        for m in (plain, sparse)
    ]
    assert mean_abs[1] < 0.5 * mean_abs[0]


def test_weight_decay_shrinks_weights() -> None:
    plain, _ = _trained(weight_decay=0.0)
    decayed, _ = _trained(weight_decay=5.0)
    norms = [
        sum(float(w.detach().pow(2).sum()) for w in penalized_weights(m.backbone))
        for m in (plain, decayed)
    ]
    assert norms[1] < 0.8 * norms[0]


def test_epoch_metrics_are_consistent() -> None:
    _, metrics = _trained(dropout=0.3, label_smoothing=0.1)
    assert metrics["gap"] == pytest.approx(metrics["val_loss"] - metrics["train_eval_loss"])
    assert 0.0 <= metrics["val_acc"] <= 1.0 and 0.0 <= metrics["val_ece"] <= 1.0
    # train_loss is measured with dropout and smoothing on; train_eval_loss without either
    assert metrics["train_loss"] > metrics["train_eval_loss"]


def test_whole_epoch_batches_train_exactly_like_per_batch_loading(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The built-in data module hands the module one shuffled epoch at a time and the module
    # cuts the minibatches: same batches, same order, same optimizer steps as a loader of
    # ordinary batches. Also with Lightning's optimizer/backward wrappers (the path taken
    # under a loss-scaling precision or a multi-device strategy) instead of direct steps.
    params = RegularizationParams(batch_size=32, dropout=0.3, l1=1e-3, label_smoothing=0.1)
    runs = []
    for whole_epoch, direct in ((True, True), (False, True), (True, False)):
        with monkeypatch.context() as patch:
            if not direct:
                patch.setattr(RegularizedClassifier, "_direct_steps", lambda self: False)
            module, built = build_mlp("synthetic", params, _SMALL)
            assert built.whole_epoch  # what the built-in trainers use
            datamodule = InMemoryDataModule(
                built.splits, 32, seed=_SMALL.seed, whole_epoch=whole_epoch
            )
            trainer = _trainer(epochs=3)
            trainer.fit(module, datamodule=datamodule)
            runs.append((module, trainer))
    n_train = len(built.splits.y_train)
    assert [len(y) for _, y in built.train_dataloader()] == [n_train]
    fast = runs[0][0]
    steps_per_epoch = -(-n_train // 32)
    for module, trainer in runs:
        assert module.epoch_metrics == fast.epoch_metrics
        state, fast_state = module.state_dict(), fast.state_dict()
        assert all(torch.equal(state[k], fast_state[k]) for k in fast_state)
        # Lightning still counts every optimizer step and epoch
        assert trainer.global_step == 3 * steps_per_epoch
        assert trainer.current_epoch == 3


def test_epoch_metrics_reach_loggers_and_monitoring_callbacks(tmp_path: Path) -> None:
    params = RegularizationParams(batch_size=64)
    # With a logger, every epoch metric goes through self.log.
    module, datamodule = build_mlp("synthetic", params, _SMALL)
    # (log_every_n_steps=1: one training "batch" per epoch, see InMemoryDataModule)
    trainer = _trainer(epochs=2, logger=CSVLogger(tmp_path), log_every_n_steps=1)
    trainer.fit(module, datamodule=datamodule)
    assert set(EPOCH_METRICS) <= set(trainer.callback_metrics)
    logged = {k: float(v) for k, v in trainer.callback_metrics.items()}
    assert {k: logged[k] for k in EPOCH_METRICS} == module.epoch_metrics
    # Without one, what a callback monitors is logged (EarlyStopping works on it) and the
    # rest is in module.epoch_metrics.
    module, datamodule = build_mlp("synthetic", params, _SMALL)
    stopper = EarlyStopping(monitor="val_acc", mode="max", patience=0)
    trainer = _trainer(epochs=2, callbacks=[stopper])
    trainer.fit(module, datamodule=datamodule)
    assert set(trainer.callback_metrics) == {"val_acc"}
    best = float(stopper.best_score)  # -inf until EarlyStopping has seen a value
    assert math.isfinite(best) and best >= module.epoch_metrics["val_acc"]
    assert set(module.epoch_metrics) == set(EPOCH_METRICS)
