"""Built-in trainers: MLPs on data sets bundled with scikit-learn (no downloads).

Registered through the ``regtune.trainers`` entry points in ``pyproject.toml``:

- ``digits-mlp``: 8x8 handwritten digits, 1,797 samples, 10 classes.
- ``breast-cancer-mlp``: Wisconsin breast cancer, 569 samples, 2 classes.
- ``wine-mlp``: wine cultivars, 178 samples, 3 classes.
- ``synthetic-mlp``: seeded ``make_classification`` set whose size is a config field.

Each has its own pydantic config (the study's ``trainer_config``). Every one accepts
``label_noise``: a fraction of training and validation labels replaced by another class, the test
split kept clean, which is where regularization visibly pays off.
"""

from __future__ import annotations

import itertools
from functools import lru_cache
from typing import Annotated, Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sklearn import datasets

from trainers.data import InMemoryDataModule, Splits, make_splits
from trainers.module import EPOCH_METRICS, RegularizedClassifier, mlp
from trainers.params import RegularizationParams
from trainers.registry import Trainer

Width = Annotated[int, Field(ge=1, le=65_536)]
# What one trial may allocate: weights of the network (x4 with gradients and AdamW's two
# moments, float32: 25M weights ~ 400 MB), and cells of a generated data set (float64 while
# scikit-learn builds it: 100M cells ~ 800 MB).
MAX_WEIGHTS = 25_000_000
MAX_DATA_CELLS = 100_000_000


class MLPConfig(BaseModel):
    """Settings shared by the built-in MLP trainers."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    # input features and classes of the data set (the synthetic set's come from its config)
    _shape: tuple[int, int] = (64, 10)

    max_epochs: int = Field(30, ge=1, le=10_000, description="Upper bound on training epochs.")
    hidden_sizes: tuple[Width, ...] = Field(
        (256, 256), min_length=1, max_length=16, description="Width of each hidden layer."
    )
    learning_rate: float = Field(1e-3, gt=0.0, le=10.0, description="AdamW learning rate.")
    seed: int = Field(
        0,
        ge=0,
        le=2**32 - 1,
        description="Seeds the split and the label noise (init, shuffling and dropout follow "
        "the trial's training seed, or `train_seed` when set).",
    )
    train_seed: int | None = Field(
        None,
        ge=0,
        le=2**32 - 1,
        description="Seeds init, shuffling and dropout for every trial (same data split); "
        "when unset each trial gets its own training seed from regtune.",
    )
    val_fraction: float = Field(0.2, gt=0.0, lt=1.0, description="Share of rows for validation.")
    test_fraction: float = Field(0.2, gt=0.0, lt=1.0, description="Share of rows for test.")
    label_noise: float = Field(
        0.0, ge=0.0, lt=1.0, description="Share of train+val labels replaced by another class."
    )

    @model_validator(mode="after")
    def _check(self) -> MLPConfig:
        if self.val_fraction + self.test_fraction >= 0.9:
            raise ValueError("val_fraction + test_fraction must be < 0.9 (training needs rows)")
        n_inputs, n_classes = self.data_shape()
        widths = (n_inputs, *self.hidden_sizes, n_classes)
        weights = sum(a * b for a, b in itertools.pairwise(widths))
        if weights > MAX_WEIGHTS:
            raise ValueError(
                f"hidden_sizes: the network would have {weights:,} weights, more than the limit "
                f"of {MAX_WEIGHTS:,}"
            )
        return self

    def data_shape(self) -> tuple[int, int]:
        """Input features and classes of the trainer's data set."""
        return self._shape


class DigitsConfig(MLPConfig):
    """``digits-mlp``: 64 → hidden → 10."""


class BreastCancerConfig(MLPConfig):
    """``breast-cancer-mlp``: 30 → hidden → 2."""

    _shape = (30, 2)

    hidden_sizes: tuple[Width, ...] = Field((64, 64), min_length=1, max_length=16)


class WineConfig(MLPConfig):
    """``wine-mlp``: 13 → hidden → 3."""

    _shape = (13, 3)

    hidden_sizes: tuple[Width, ...] = Field((32, 32), min_length=1, max_length=16)
    max_epochs: int = Field(60, ge=1, le=10_000)


class SyntheticConfig(MLPConfig):
    """``synthetic-mlp``: ``sklearn.datasets.make_classification`` with a configurable size."""

    hidden_sizes: tuple[Width, ...] = Field((64, 64), min_length=1, max_length=16)
    n_samples: int = Field(2_000, ge=30, le=10_000_000, description="Rows generated.")
    n_features: int = Field(20, ge=2, le=10_000)
    n_informative: int = Field(10, ge=1)
    n_classes: int = Field(3, ge=2, le=100)
    class_sep: float = Field(1.0, gt=0.0)

    @model_validator(mode="after")
    def _check_synthetic(self) -> SyntheticConfig:
        if self.n_informative > self.n_features:
            raise ValueError("n_informative must be <= n_features")
        if self.n_classes > 2**self.n_informative:
            raise ValueError("n_classes must be <= 2 ** n_informative")
        cells = self.n_samples * self.n_features
        if cells > MAX_DATA_CELLS:
            raise ValueError(
                f"n_samples: n_samples x n_features is {cells:,} values, more than the limit "
                f"of {MAX_DATA_CELLS:,}"
            )
        return self

    def data_shape(self) -> tuple[int, int]:
        return self.n_features, self.n_classes


_LOADERS = {
    "digits": datasets.load_digits,
    "breast_cancer": datasets.load_breast_cancer,
    "wine": datasets.load_wine,
}


@lru_cache(maxsize=8)
def _bundled(name: str) -> tuple[np.ndarray, np.ndarray]:
    x, y = _LOADERS[name](return_X_y=True)
    return np.asarray(x), np.asarray(y)


@lru_cache(maxsize=4)
def _splits(name: str, config: MLPConfig) -> Splits:
    # Cached per (data set, config): trials of one study share their data tensors (read-only).
    if isinstance(config, SyntheticConfig):
        x, y = datasets.make_classification(
            n_samples=config.n_samples,
            n_features=config.n_features,
            n_informative=config.n_informative,
            n_redundant=0,
            n_classes=config.n_classes,
            class_sep=config.class_sep,
            random_state=config.seed,
        )
    else:
        x, y = _bundled(name)
    return make_splits(
        x,
        y,
        val_fraction=config.val_fraction,
        test_fraction=config.test_fraction,
        seed=config.seed,
        label_noise=config.label_noise,
    )


def build_mlp(
    dataset: str, params: RegularizationParams, config: MLPConfig, *, seed: int | None = None
) -> tuple[RegularizedClassifier, InMemoryDataModule]:
    """Build the module and data module of a built-in trainer.

    The split and label noise follow ``config.seed``; initialization, shuffles and dropout
    follow ``seed`` (the trial's training seed, which `run_trial` resolves and passes: see
    `trainers.objective.train_seed_for`), else ``config.train_seed`` when set, else
    ``config.seed``.
    """
    # the data depend on `seed` only: re-trainings with another train_seed share one split
    splits = _splits(dataset, config.model_copy(update={"train_seed": None}))
    if seed is not None:
        train_seed = seed
    elif config.train_seed is not None:
        train_seed = config.train_seed
    else:
        train_seed = config.seed
    # Seeds initialization and, since nothing else draws from torch's global generator before
    # fit, the dropout masks: same seeds + same params -> same metrics.
    torch.manual_seed(train_seed)
    backbone = mlp(splits.n_features, config.hidden_sizes, splits.n_classes, params.dropout)
    module = RegularizedClassifier(backbone, params, learning_rate=config.learning_rate)
    # whole_epoch: the module cuts the minibatches itself (same batches and optimizer steps),
    # so Lightning's per-batch loop overhead is paid once per epoch.
    datamodule = InMemoryDataModule(splits, params.batch_size, seed=train_seed, whole_epoch=True)
    return module, datamodule


def _builder(dataset: str) -> Any:
    def build(
        params: RegularizationParams, config: Any, *, seed: int | None = None
    ) -> tuple[Any, Any]:
        return build_mlp(dataset, params, config, seed=seed)

    return build


DIGITS_MLP = Trainer(
    name="digits-mlp",
    description="MLP on scikit-learn's 8x8 digits (1,797 images, 10 classes)",
    config_model=DigitsConfig,
    build=_builder("digits"),
    metrics=EPOCH_METRICS,
    task="classification",
    tags=("builtin", "tabular"),
)
BREAST_CANCER_MLP = Trainer(
    name="breast-cancer-mlp",
    description="MLP on scikit-learn's breast cancer set (569 samples, 2 classes)",
    config_model=BreastCancerConfig,
    build=_builder("breast_cancer"),
    metrics=EPOCH_METRICS,
    task="classification",
    tags=("builtin", "tabular"),
)
WINE_MLP = Trainer(
    name="wine-mlp",
    description="MLP on scikit-learn's wine set (178 samples, 3 classes)",
    config_model=WineConfig,
    build=_builder("wine"),
    metrics=EPOCH_METRICS,
    task="classification",
    tags=("builtin", "tabular"),
)
SYNTHETIC_MLP = Trainer(
    name="synthetic-mlp",
    description="MLP on a seeded synthetic classification set (size set by n_samples)",
    config_model=SyntheticConfig,
    build=_builder("synthetic"),
    metrics=EPOCH_METRICS,
    task="classification",
    tags=("builtin", "synthetic"),
)
