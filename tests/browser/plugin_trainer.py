"""A plugin trainer written the way a user writes one, logging only its own metric names.

`val_xent` (cross-entropy, the study's objective) and `val_hits` (accuracy): no `val_loss`, no
gap, no ECE and no declaration in its `Trainer(...)`, so the study page has to draw its curves
from its own names and explain the panels it cannot feed. Registered in-process by the tests
(the worker and the server run in the test's process).
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from trainers import RegularizationParams, Trainer

NAME = "browser-own-metrics"


class OwnConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_epochs: int = Field(4, ge=1, le=20)
    n_samples: int = Field(160, ge=16, le=2_000)


class OwnModule(pl.LightningModule):
    def __init__(self, params: RegularizationParams) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(6, 16), nn.ReLU(), nn.Dropout(params.dropout), nn.Linear(16, 3)
        )
        self.reg = params

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(self(x), y, label_smoothing=self.reg.label_smoothing)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.log("val_xent", F.cross_entropy(logits, y), on_epoch=True)
        self.log("val_hits", (logits.argmax(1) == y).float().mean(), on_epoch=True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=0.02, weight_decay=self.reg.weight_decay)


class OwnData(pl.LightningDataModule):
    def __init__(self, batch_size: int, config: OwnConfig) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        x = torch.randn(config.n_samples, 6, generator=g)
        y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
        cut = config.n_samples * 3 // 4
        self.train_set = TensorDataset(x[:cut], y[:cut])
        self.val_set = TensorDataset(x[cut:], y[cut:])
        self.batch_size = batch_size

    def train_dataloader(self) -> DataLoader[Any]:
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader[Any]:
        return DataLoader(self.val_set, batch_size=256)


def build(params: RegularizationParams, config: OwnConfig) -> tuple[Any, Any]:
    return OwnModule(params), OwnData(params.batch_size, config)


TRAINER = Trainer(
    name=NAME,
    description="browser-test plugin logging only val_xent and val_hits",
    config_model=OwnConfig,
    build=build,
    metrics=("val_xent", "val_hits"),
)
