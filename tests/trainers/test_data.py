"""In-memory data: slicing batches, per-epoch seeded shuffles, stratified splits, label noise."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trainers.builtin import SyntheticConfig, _splits
from trainers.data import SliceBatches, make_splits, symmetric_label_noise


def _epoch(batches: SliceBatches) -> list[torch.Tensor]:
    return [x for x, _ in batches]


def test_slices_cover_every_row_once_with_a_smaller_last_batch() -> None:
    x = torch.arange(10).float().unsqueeze(1)
    y = torch.arange(10)
    batches = SliceBatches(x, y, 4, shuffle=True, seed=3)
    assert len(batches) == 3
    xs = _epoch(batches)
    assert [len(b) for b in xs] == [4, 4, 2]
    seen = torch.cat(xs).squeeze(1).long()
    assert sorted(seen.tolist()) == list(range(10))
    # x and y stay aligned after the shuffle
    for bx, by in batches:
        assert torch.equal(bx.squeeze(1).long(), by)


def test_shuffle_changes_per_epoch_and_is_seeded() -> None:
    x = torch.arange(64).float().unsqueeze(1)
    y = torch.zeros(64, dtype=torch.long)
    a = SliceBatches(x, y, 8, shuffle=True, seed=0)
    b = SliceBatches(x, y, 8, shuffle=True, seed=0)
    first, second = torch.cat(_epoch(a)), torch.cat(_epoch(a))
    assert not torch.equal(first, second)  # a new order each epoch
    assert torch.equal(first, torch.cat(_epoch(b)))  # same seed, same sequence of orders
    assert torch.equal(second, torch.cat(_epoch(b)))
    c = SliceBatches(x, y, 8, shuffle=True, seed=1)
    assert not torch.equal(first, torch.cat(_epoch(c)))


def test_no_shuffle_keeps_order() -> None:
    x = torch.arange(5).float().unsqueeze(1)
    batches = SliceBatches(x, torch.arange(5), 2)
    assert torch.cat(_epoch(batches)).squeeze(1).tolist() == [0, 1, 2, 3, 4]


def test_batches_are_views_not_copies() -> None:
    # Slicing, not per-sample indexing: an unshuffled batch shares the data tensor's storage.
    x = torch.randn(8, 3)
    bx, _ = next(iter(SliceBatches(x, torch.zeros(8, dtype=torch.long), 4)))
    assert bx.data_ptr() == x.data_ptr()


def _ids_split(seed: int, noise: float = 0.0):  # type: ignore[no-untyped-def]
    n = 300
    y = np.repeat([0, 1, 2], [150, 100, 50])
    x = np.arange(n, dtype=float).reshape(-1, 1)  # the feature is the row id
    return y, make_splits(
        x, y, val_fraction=0.2, test_fraction=0.2, seed=seed, label_noise=noise, standardize=False
    )


def test_splits_are_disjoint_complete_stratified_and_seeded() -> None:
    _, s = _ids_split(0)
    ids = [t.squeeze(1).long().tolist() for t in (s.x_train, s.x_val, s.x_test)]
    assert [len(i) for i in ids] == [180, 60, 60]
    assert sorted(ids[0] + ids[1] + ids[2]) == list(range(300))
    for labels, part in ((s.y_train, 180), (s.y_val, 60), (s.y_test, 60)):
        counts = np.bincount(labels.numpy(), minlength=3)
        expected = np.array([0.5, 1 / 3, 1 / 6]) * part
        assert np.all(np.abs(counts - expected) <= 1)
    _, again = _ids_split(0)
    assert torch.equal(again.x_test, s.x_test)
    _, other = _ids_split(1)
    assert not torch.equal(other.x_test, s.x_test)


def test_label_noise_flips_train_and_val_only() -> None:
    _, clean = _ids_split(0)
    _, noisy = _ids_split(0, noise=0.4)
    assert torch.equal(noisy.x_train, clean.x_train)  # same rows, only labels differ
    for part in ("train", "val"):
        changed = getattr(noisy, f"y_{part}") != getattr(clean, f"y_{part}")
        assert int(changed.sum()) == round(0.4 * len(changed))
    assert torch.equal(noisy.y_test, clean.y_test)
    # each flipped label is the true label of no row: it is another class, and in range
    assert set(noisy.y_train.unique().tolist()) <= {0, 1, 2}


def test_symmetric_noise_never_keeps_the_label() -> None:
    y = np.zeros(1000, dtype=np.int64)
    noisy = symmetric_label_noise(y, 1.0, 4, np.random.default_rng(0))
    assert (noisy != 0).all()
    assert set(np.unique(noisy)) == {1, 2, 3}  # uniform over the other classes


def test_synthetic_size_is_a_config_field() -> None:
    s = _splits("synthetic", SyntheticConfig(n_samples=500, n_features=6, n_informative=3))
    assert len(s.x_train) + len(s.x_val) + len(s.x_test) == 500
    assert s.n_features == 6
    # standardized with the training split's statistics
    assert s.x_train.mean(0).abs().max() < 1e-5
    assert s.x_train.std(0, unbiased=False).sub(1).abs().max() < 1e-4


def test_label_noise_out_of_range_is_refused() -> None:
    with pytest.raises(ValueError, match="label_noise"):
        symmetric_label_noise(np.zeros(3, dtype=np.int64), 1.5, 2, np.random.default_rng(0))
