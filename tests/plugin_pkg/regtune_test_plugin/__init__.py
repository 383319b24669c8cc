"""A minimal regtune trainer plugin, written the way a user would write one.

The module and data module are ordinary Lightning code (``self.log`` in ``validation_step``, a
``DataLoader`` over a ``TensorDataset``); `make_trainer` builds the same trainer against either
Lightning namespace so the tests can drive both. ``nan_at_epoch`` makes the training loss NaN
from that epoch on (for the divergence tests); ``log_every`` logs a validation metric on some
epochs only (for the stale-metric tests).
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import lightning.pytorch
import pytorch_lightning
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from trainers import RegularizationParams, Trainer


class TinyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_epochs: int = Field(3, ge=1)
    n_samples: int = Field(96, ge=8)
    seed: int = 0
    learning_rate: float = Field(0.05, gt=0)
    nan_at_epoch: int | None = None
    # validation metrics logged on every Nth epoch only (epoch % N == 0), by name
    log_every: dict[str, int] = {}


def make_trainer(ns: ModuleType, name: str) -> Trainer:
    """A `Trainer` whose module and data module subclass ``ns`` (one Lightning namespace)."""

    class TinyModule(ns.LightningModule):  # type: ignore[name-defined]
        def __init__(self, params: RegularizationParams, config: TinyConfig) -> None:
            super().__init__()
            self.net = nn.Sequential(
                nn.Linear(4, 8), nn.ReLU(), nn.Dropout(params.dropout), nn.Linear(8, 2)
            )
            self.params_ = params
            self.config = config

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = batch
            loss = F.cross_entropy(self.net(x), y, label_smoothing=self.params_.label_smoothing)
            if (
                self.config.nan_at_epoch is not None
                and self.current_epoch >= self.config.nan_at_epoch
            ):
                loss = loss * float("nan")
            self.log("train_loss", loss, on_step=False, on_epoch=True)
            return loss

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            x, y = batch
            logits = self.net(x)
            for name, value in (
                ("val_loss", F.cross_entropy(logits, y)),
                ("val_acc", (logits.argmax(1) == y).float().mean()),
            ):
                if self.current_epoch % self.config.log_every.get(name, 1) == 0:
                    self.log(name, value, on_epoch=True)

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.AdamW(
                self.parameters(),
                lr=self.config.learning_rate,
                weight_decay=self.params_.weight_decay,
            )

    class TinyData(ns.LightningDataModule):  # type: ignore[name-defined]
        def __init__(self, batch_size: int, config: TinyConfig) -> None:
            super().__init__()
            g = torch.Generator().manual_seed(config.seed)
            x = torch.randn(config.n_samples, 4, generator=g)
            y = (x[:, 0] + x[:, 1] > 0).long()
            cut = config.n_samples * 3 // 4
            self.train = TensorDataset(x[:cut], y[:cut])
            self.val = TensorDataset(x[cut:], y[cut:])
            self.batch_size = batch_size
            self.seed = config.seed

        def train_dataloader(self) -> DataLoader[Any]:
            g = torch.Generator().manual_seed(self.seed)
            return DataLoader(self.train, batch_size=self.batch_size, shuffle=True, generator=g)

        def val_dataloader(self) -> DataLoader[Any]:
            return DataLoader(self.val, batch_size=256)

    def build(params: RegularizationParams, config: TinyConfig) -> tuple[Any, Any]:
        torch.manual_seed(config.seed)
        return TinyModule(params, config), TinyData(params.batch_size, config)

    return Trainer(
        name=name,
        description=f"tiny test trainer ({ns.__name__})",
        config_model=TinyConfig,
        build=build,
        metrics=("train_loss", "val_loss", "val_acc"),
    )


PL_TRAINER = make_trainer(pytorch_lightning, "test-plugin-pl")
LIGHTNING_TRAINER = make_trainer(lightning.pytorch, "test-plugin-lightning")
