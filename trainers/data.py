"""In-memory data: seeded stratified splits, symmetric label noise, and batching by slicing.

Small tabular data sets fit in memory as two tensors. Indexing a `TensorDataset` sample by sample
and collating through a `DataLoader` costs more than the MLP's forward pass on such data, so the
data module here hands Lightning plain iterables that cut each batch as one tensor slice.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from sklearn.model_selection import train_test_split


class SliceBatches:
    """Iterate over ``(x, y)`` in batches cut as tensor slices.

    With ``shuffle`` the rows are permuted once per pass (one gather per epoch) with a
    ``torch.Generator`` seeded at construction, so the order differs between epochs but is the
    same for two runs with the same seed.

    Args:
        x: features, first dimension = samples.
        y: labels, same first dimension.
        batch_size: rows per batch (the last batch may be smaller).
        shuffle: permute the rows at the start of each pass.
        seed: seed of the permutation generator (used only with ``shuffle``).
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        batch_size: int,
        *,
        shuffle: bool = False,
        seed: int = 0,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if len(x) != len(y):
            raise ValueError(f"x has {len(x)} rows but y has {len(y)}")
        self.x = x
        self.y = y
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return (len(self.x) + self.batch_size - 1) // self.batch_size

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        x, y = self.x, self.y
        if self.shuffle:
            perm = torch.randperm(len(x), generator=self.generator)
            x, y = x[perm], y[perm]
        for start in range(0, len(x), self.batch_size):
            yield x[start : start + self.batch_size], y[start : start + self.batch_size]


@dataclass(frozen=True)
class Splits:
    """Train/validation/test tensors (features float32, labels int64)."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    n_classes: int

    @property
    def n_features(self) -> int:
        return int(self.x_train.shape[1])


def symmetric_label_noise(
    y: np.ndarray, fraction: float, n_classes: int, rng: np.random.Generator
) -> np.ndarray:
    """Return a copy of ``y`` where exactly ``round(fraction·n)`` labels, chosen at random, are
    replaced by a different class drawn uniformly among the other ``n_classes - 1``."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"label_noise must be in [0, 1], got {fraction}")
    noisy = y.copy()
    n_flip = round(fraction * len(y))
    if n_flip == 0 or n_classes < 2:
        return noisy
    idx = rng.choice(len(y), size=n_flip, replace=False)
    # An offset in 1..n_classes-1 guarantees the new label differs from the old one.
    offset = rng.integers(1, n_classes, size=n_flip)
    noisy[idx] = (y[idx] + offset) % n_classes
    return noisy


def make_splits(
    x: np.ndarray,
    y: np.ndarray,
    *,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    label_noise: float = 0.0,
    standardize: bool = True,
) -> Splits:
    """Stratified, seeded train/val/test split; optional noise on train+val labels (test clean).

    Features are standardized with the training split's mean and standard deviation.
    """
    y = np.asarray(y).astype(np.int64)
    classes, y = np.unique(y, return_inverse=True)
    n_classes = len(classes)
    x_rest, x_test, y_rest, y_test = train_test_split(
        x, y, test_size=test_fraction, stratify=y, random_state=seed
    )
    x_train, x_val, y_train, y_val = train_test_split(
        x_rest,
        y_rest,
        test_size=val_fraction / (1.0 - test_fraction),
        stratify=y_rest,
        random_state=seed + 1,
    )
    if label_noise > 0:
        rng = np.random.default_rng(seed + 2)
        y_train = symmetric_label_noise(y_train, label_noise, n_classes, rng)
        y_val = symmetric_label_noise(y_val, label_noise, n_classes, rng)
    x_train = np.asarray(x_train, dtype=np.float64)
    if standardize:
        mean = x_train.mean(axis=0)
        std = x_train.std(axis=0)
        std[std == 0] = 1.0  # constant pixels (digits' corners) stay 0 instead of NaN
    else:
        mean, std = np.zeros(x_train.shape[1]), np.ones(x_train.shape[1])

    def tx(a: np.ndarray) -> torch.Tensor:
        return torch.as_tensor((np.asarray(a, dtype=np.float64) - mean) / std, dtype=torch.float32)

    def ty(a: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.asarray(a), dtype=torch.int64)

    return Splits(tx(x_train), ty(y_train), tx(x_val), ty(y_val), tx(x_test), ty(y_test), n_classes)


class InMemoryDataModule(pl.LightningDataModule):
    """A `LightningDataModule` over in-memory splits, batching by slicing.

    Training batches are shuffled per epoch (seeded); validation and test are evaluated in
    order, in batches of ``eval_batch_size`` (batch size does not change evaluation results).

    With ``whole_epoch`` the training loader yields a single item per epoch: the whole training
    split after that epoch's permutation (the same permutation the per-batch loader uses), for a
    module that cuts its own minibatches of ``batch_size`` rows, as `RegularizedClassifier` does.
    The optimization is the same (same batches, same order, one optimizer step per batch);
    Lightning's per-batch loop machinery then runs once per epoch instead of once per step,
    which on small models is a large share of the step time.

    Args:
        splits: the tensors.
        batch_size: training batch size (the sampled ``batch_size`` parameter).
        seed: seed of the per-epoch shuffle.
        eval_batch_size: batch size for validation, test and the train-set evaluation.
        whole_epoch: yield the epoch's shuffled training split as one item (see above).
    """

    def __init__(
        self,
        splits: Splits,
        batch_size: int,
        *,
        seed: int = 0,
        eval_batch_size: int = 1024,
        whole_epoch: bool = False,
    ) -> None:
        super().__init__()
        self.splits = splits
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.whole_epoch = whole_epoch
        # One "batch" holding every row is exactly the shuffled split: same generator, same
        # permutation per epoch as the per-batch loader, so both modes see the same batches.
        rows = max(len(splits.y_train), 1) if whole_epoch else batch_size
        self._train = SliceBatches(splits.x_train, splits.y_train, rows, shuffle=True, seed=seed)
        self._subsets: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def train_dataloader(self) -> SliceBatches:
        return self._train

    def state_dict(self) -> dict[str, Any]:
        # Lightning keeps this in a checkpoint: a resumed trial shuffles its next epochs as the
        # uninterrupted one would have
        return {"shuffle_generator": self._train.generator.get_state()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._train.generator.set_state(state_dict["shuffle_generator"])

    def val_dataloader(self) -> SliceBatches:
        return SliceBatches(self.splits.x_val, self.splits.y_val, self.eval_batch_size)

    def test_dataloader(self) -> SliceBatches:
        return SliceBatches(self.splits.x_test, self.splits.y_test, self.eval_batch_size)

    def transfer_batch_to_device(
        self, batch: tuple[torch.Tensor, torch.Tensor], device: torch.device, dataloader_idx: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # Batches are always an (x, y) pair of tensors: skip Lightning's generic collection walk.
        x, y = batch
        if x.device == device:
            return batch
        return x.to(device, non_blocking=True), y.to(device, non_blocking=True)

    def train_eval_batches(self) -> SliceBatches:
        """The training split in order, for measuring the training loss in eval mode."""
        return SliceBatches(self.splits.x_train, self.splits.y_train, self.eval_batch_size)

    def train_subset_batches(self, size: int) -> SliceBatches:
        """A fixed subset of ``size`` training rows (evenly spaced indices ``i·n/size``, the
        whole split when it has at most ``size`` rows), in order, for the train-side metrics."""
        n = len(self.splits.y_train)
        if n <= size:
            return self.train_eval_batches()
        cached = self._subsets.get(size)
        if cached is None:
            idx = torch.arange(size) * n // size
            cached = (self.splits.x_train[idx], self.splits.y_train[idx])
            self._subsets[size] = cached
        return SliceBatches(cached[0], cached[1], self.eval_batch_size)
