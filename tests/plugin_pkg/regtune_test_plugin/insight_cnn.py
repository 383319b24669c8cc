"""``insight-cnn``: a small CNN plugin that logs only its own metric name, ``val_nll_custom``.

Written the way a user writes a plugin (``pytorch_lightning`` namespace, a standard
``DataLoader``, ``self.log`` in ``validation_step``), with no gap, ECE, accuracy or sparsity code
of its own. Its one declaration, ``task="classification"``, is all regtune needs to yield
``val_nll``, ``val_acc``, ``val_ece``, ``train_nll``, ``gap``, ``weight_l2`` and
``near_zero_frac`` for it. It seeds nothing itself: regtune's ``seed_everything`` before
``build`` makes its initialization, shuffles and dropout reproducible.

Data: scikit-learn's 8x8 digits as 1-channel images (``n_train`` training rows, 360 validation
rows), with optional symmetric label noise on the training labels.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from trainers import RegularizationParams, Trainer

N_VAL = 360


class CNNConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_epochs: int = Field(4, ge=1, le=200)
    n_train: int = Field(1_400, ge=20, le=1_400)
    channels: int = Field(16, ge=1, le=64)
    learning_rate: float = Field(1e-2, gt=0, le=1)
    label_noise: float = Field(0.0, ge=0, lt=1)


@lru_cache(maxsize=1)
def _digits() -> tuple[torch.Tensor, torch.Tensor]:
    x, y = load_digits(return_X_y=True)
    images = torch.as_tensor(np.asarray(x) / 16.0, dtype=torch.float32).reshape(-1, 1, 8, 8)
    return images, torch.as_tensor(np.asarray(y), dtype=torch.int64)


class DigitsCNN(pl.LightningModule):
    def __init__(self, params: RegularizationParams, config: CNNConfig) -> None:
        super().__init__()
        c = config.channels
        self.features = nn.Sequential(
            nn.Conv2d(1, c, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(c, 2 * c, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Dropout(params.dropout),
        )
        self.head = nn.Linear(2 * c * 2 * 2, 10)
        self.reg = params
        self.config = config

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.cross_entropy(self(x), y, label_smoothing=self.reg.label_smoothing)
        if self.reg.l1 > 0:
            loss = loss + self.reg.l1 * sum(p.abs().sum() for p in self.parameters() if p.ndim > 1)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("val_nll_custom", F.cross_entropy(self(x), y), on_epoch=True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(
            self.parameters(), lr=self.config.learning_rate, weight_decay=self.reg.weight_decay
        )


class DigitsImages(pl.LightningDataModule):
    def __init__(self, batch_size: int, config: CNNConfig) -> None:
        super().__init__()
        x, y = _digits()
        order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
        val, train = order[:N_VAL], order[N_VAL : N_VAL + config.n_train]
        y_train = y[train].clone()
        if config.label_noise > 0:
            g = torch.Generator().manual_seed(1)
            flip = torch.rand(len(train), generator=g) < config.label_noise
            offset = torch.randint(1, 10, (len(train),), generator=g)
            y_train[flip] = (y_train[flip] + offset[flip]) % 10
        self.train_set = TensorDataset(x[train], y_train)
        self.val_set = TensorDataset(x[val], y[val])
        self.batch_size = batch_size

    def train_dataloader(self) -> DataLoader[Any]:
        # shuffled with torch's global generator: regtune's seed_everything makes it repeatable
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader[Any]:
        return DataLoader(self.val_set, batch_size=512)


def build(params: RegularizationParams, config: CNNConfig) -> tuple[Any, Any]:
    return DigitsCNN(params, config), DigitsImages(params.batch_size, config)


TRAINER = Trainer(
    name="insight-cnn",
    description="small CNN on 8x8 digits that logs only val_nll_custom (test plugin)",
    config_model=CNNConfig,
    build=build,
    metrics=("val_nll_custom",),
    task="classification",
)
