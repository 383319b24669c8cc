"""Regularization insight for any Lightning module: weight size, sparsity, NLL, accuracy,
calibration and the generalization gap, computed by regtune rather than by the trainer.

- Every module: `weight_stats` over its weights (parameters with ``ndim >= 2``: linear and
  convolution kernels, embeddings) gives ``weight_l2`` and ``near_zero_frac``.
- A trainer registered with ``task="classification"``: `Insight` runs the module's
  ``forward`` in eval mode (no gradients, dropout off) over the validation loader and over a
  fixed subset of the training split (`TRAIN_SUBSET` rows, evenly spaced, the same rows every
  epoch) and computes with torchmetrics ``val_nll``, ``val_acc``, ``val_ece``, ``train_nll``,
  ``train_acc`` and ``gap = val_nll - train_nll``: the objective's unsmoothed loss measured
  the same way on both sides, without label smoothing or penalties.
- ``task="regression"``: ``val_task_loss``, ``train_task_loss`` (the registered ``loss``,
  mean squared error by default) and ``gap`` on it.

The classification metrics are defined in `trainers.metrics` (torchmetrics; 15-bin ECE).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.aggregation import MeanMetric

from trainers.metrics import ClassificationMetrics

#: |w| below this counts as a near-zero weight.
NEAR_ZERO = 1e-3
#: Rows of the training split the train-side metrics are measured on (all rows when fewer).
TRAIN_SUBSET = 256
#: `weight_stats` copies the weights into one flat tensor up to this many entries (16 MiB of
#: float32), and works tensor by tensor above it.
_FLAT_LIMIT = 1 << 22

Task = Literal["classification", "regression"]
BatchToXY = Callable[[Any], tuple[Any, Any]]
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

WEIGHT_METRICS: tuple[str, ...] = ("weight_l2", "near_zero_frac")
CLASSIFIER_METRICS: tuple[str, ...] = (
    "val_nll",
    "val_acc",
    "val_ece",
    "train_nll",
    "train_acc",
    "gap",
)
REGRESSION_METRICS: tuple[str, ...] = ("val_task_loss", "train_task_loss", "gap")


def insight_metrics(task: Task | None) -> tuple[str, ...]:
    """The names regtune computes per epoch for a trainer declared with ``task``."""
    if task == "classification":
        return (*CLASSIFIER_METRICS, *WEIGHT_METRICS)
    if task == "regression":
        return (*REGRESSION_METRICS, *WEIGHT_METRICS)
    return WEIGHT_METRICS


def weights_of(module: nn.Module) -> list[nn.Parameter]:
    """Weight matrices and convolution kernels: parameters with two or more dimensions."""
    return [p for p in module.parameters() if p.ndim >= 2]


def weight_stats(
    weights: Iterable[torch.Tensor], threshold: float = NEAR_ZERO
) -> dict[str, torch.Tensor]:
    """``weight_l2`` (L2 norm of all weights together) and ``near_zero_frac`` (share of their
    entries with ``|w| < threshold``), as 0-d tensors on the weights' device (no host sync)."""
    ws = [w.detach() for w in weights]
    if not ws:
        zero = torch.zeros(())
        return {"weight_l2": zero, "near_zero_frac": zero.clone()}
    total = sum(w.numel() for w in ws)
    if total <= _FLAT_LIMIT and len({w.device for w in ws}) == 1:
        # a small model: one flat copy, then a handful of ops instead of three per tensor
        # (on such models the per-op overhead is the whole cost)
        flat = torch.cat([w.reshape(-1) for w in ws])
        l2 = torch.linalg.vector_norm(flat, dtype=torch.float32)
        small = torch.count_nonzero(flat.abs() < threshold)
    else:
        norms = torch._foreach_norm(ws)  # one L2 norm per tensor, one kernel launch where fused
        l2 = torch.stack(norms).float().norm()
        small = torch.stack([torch.count_nonzero(w.abs() < threshold) for w in ws]).sum()
    return {"weight_l2": l2, "near_zero_frac": small / total}


def _default_xy(batch: Any) -> tuple[Any, Any]:
    if isinstance(batch, (tuple, list)) and len(batch) >= 2:
        return batch[0], batch[1]
    raise TypeError(
        f"a {type(batch).__name__} batch is no (x, y) pair: register the trainer with "
        "batch_to_xy=callable(batch) -> (x, y)"
    )


def _to(data: Any, device: torch.device) -> Any:
    from lightning.fabric.utilities.apply_func import move_data_to_device

    return move_data_to_device(data, device)


def _first_loader(loaders: Any) -> Any:
    if isinstance(loaders, (list, tuple)):
        return loaders[0] if loaders else None
    if isinstance(loaders, dict):
        return next(iter(loaders.values()), None)
    return loaders


def _batch_size(loader: Any) -> int:
    size = getattr(loader, "batch_size", None)
    return size if isinstance(size, int) and size > 0 else 0


def regression_loss(pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean squared error of a regression model (the default `loss`). A ``(n, 1)`` prediction
    against ``(n,)`` targets (or the reverse) is one column, not a broadcast ``(n, n)``; any
    other shape mismatch is an error naming both shapes."""
    if pred.dim() == y.dim() + 1 and pred.shape[-1] == 1:
        pred = pred.squeeze(-1)
    elif y.dim() == pred.dim() + 1 and y.shape[-1] == 1:
        y = y.squeeze(-1)
    if pred.shape != y.shape:
        raise ValueError(
            f"regression: the model's output has shape {tuple(pred.shape)} but the targets "
            f"{tuple(y.shape)}; declare a `loss` for the trainer that compares them"
        )
    return F.mse_loss(pred, y.to(pred.dtype))


def _subset_batches(loader: Any, size: int, batch_size: int) -> list[Any] | None:
    """A fixed, ordered subset of ``size`` rows of a loader's training data, collated once.

    A torch ``DataLoader`` over a sized (map-style) dataset: evenly spaced indices
    ``i·len/size`` through ``torch.utils.data.Subset``, in order, collated with the loader's
    collate function into batches of ``batch_size`` rows (the larger of the training and
    validation loaders' batch sizes: fewer, larger no-grad forward passes), read once and kept
    (a few hundred rows). No shuffling and no random generator touched: training stays as it
    was. With a sampler that picks rows (``indices``, as ``SubsetRandomSampler``) the subset is
    spaced over those rows; None for other loaders (an iterable dataset, another sampler, a
    custom batch sampler).
    """
    from torch.utils.data import BatchSampler, DataLoader, RandomSampler, SequentialSampler, Subset

    dataset = getattr(loader, "dataset", None)
    if not isinstance(loader, DataLoader) or not hasattr(dataset, "__getitem__"):
        return None
    sampler, batches = loader.sampler, loader.batch_sampler
    if batches is not None and type(batches) is not BatchSampler:
        return None  # a custom batch sampler decides which rows are training rows
    if isinstance(sampler, SequentialSampler | RandomSampler):
        try:
            pool: Sequence[int] = range(len(dataset))  # type: ignore[arg-type]
        except TypeError:
            return None
    else:
        indices = getattr(sampler, "indices", None)  # e.g. SubsetRandomSampler's rows
        if not isinstance(indices, Sequence):
            return None
        pool = indices
    n = len(pool)
    idx = [int(pool[i]) for i in (range(n) if n <= size else (i * n // size for i in range(size)))]
    subset = DataLoader(
        Subset(dataset, idx),  # type: ignore[arg-type]
        batch_size=max(batch_size, _batch_size(loader), 1),
        shuffle=False,
        collate_fn=loader.collate_fn,
    )
    return list(subset)


def _eval_mode(module: nn.Module) -> list[nn.Module]:
    """Put ``module`` in eval mode; the submodules that were training (none while Lightning
    validates, which already switched them), for `_restore_mode`."""
    training = [m for m in module.modules() if m.training]
    if training:
        module.eval()
    return training


def _restore_mode(module: nn.Module, training: list[nn.Module]) -> None:
    """Undo `_eval_mode`: the flags as they were (as Lightning restores them after validating)."""
    for m in training:
        m.training = True


def _forward(module: Any, x: Any) -> torch.Tensor:
    try:
        out = module(x)
    except NotImplementedError as exc:
        raise TypeError(
            f"{type(module).__name__} defines no forward(x): a trainer declared with a task "
            "needs forward(x) to return the logits (classification) or predictions (regression)"
        ) from exc
    if not isinstance(out, torch.Tensor):
        raise TypeError(
            f"{type(module).__name__}.forward(x) returned a {type(out).__name__}, not a tensor "
            "of logits or predictions"
        )
    return out


class Insight:
    """What regtune computes for one trainer's module each (cadence) epoch.

    Validation side: while the module validates, a forward hook on it keeps what its
    ``forward`` returns for each batch; when that is exactly one tensor with a row per label,
    those logits are used (no second validation pass). Otherwise (the module validates
    through a sub-network, or calls ``forward`` several times per batch) regtune runs
    ``forward`` over the validation loader itself after the epoch.

    Args:
        task: the trainer's declaration (None: weight statistics only).
        batch_to_xy: maps a loader's batch to ``(x, y)`` (default: the batch's first two items).
        loss: the regression loss ``loss(pred, y)`` (default: mean squared error).
        every: compute every ``every`` epochs (epochs 0, every, 2·every, ...); 0 turns it off.
        train_subset: training rows the train-side metrics use.
    """

    def __init__(
        self,
        task: Task | None,
        *,
        batch_to_xy: BatchToXY | None = None,
        loss: LossFn | None = None,
        every: int = 1,
        train_subset: int = TRAIN_SUBSET,
    ) -> None:
        self.task = task
        self.to_xy = batch_to_xy or _default_xy
        self.loss = loss or regression_loss
        self.every = every
        self.train_subset = train_subset
        self.names = insight_metrics(task)
        self._train_batches: list[Any] | None = None
        self._train_device: torch.device | None = None
        self._val = ClassificationMetrics()
        self._train = ClassificationMetrics(ece=False)
        self._hook: Any = None
        self._outputs: list[torch.Tensor] = []
        self._captured = False  # the validation pass's logits are usable this epoch
        self._capture_ok = True  # no batch so far was ambiguous
        self._self_reported = False  # the module reports all of these names itself

    def due(self, epoch: int) -> bool:
        return self.every > 0 and epoch % self.every == 0

    # -- capture of the module's own validation forward --------------------------------------

    def on_validation_epoch_start(self, trainer: Any, module: Any) -> None:
        self._release()
        if (
            self.task != "classification"
            or self._self_reported  # e.g. the built-in module: nothing to capture
            or trainer.sanity_checking
            or not self.due(int(trainer.current_epoch))
        ):
            return
        self._val.reset(ece=True)
        self._captured = False
        self._capture_ok = True
        self._hook = module.register_forward_hook(self._keep)

    def _keep(self, _module: Any, _inputs: Any, output: Any) -> None:
        if isinstance(output, torch.Tensor):
            self._outputs.append(output)
        else:
            self._capture_ok = False

    def on_validation_batch_start(self) -> None:
        self._outputs.clear()

    def on_validation_batch_end(self, batch: Any, dataloader_idx: int) -> None:
        if self._hook is None or not self._capture_ok or dataloader_idx != 0:
            return
        outputs, self._outputs = self._outputs, []
        try:
            _, y = self.to_xy(batch)
        except TypeError:
            self._capture_ok = False
            return
        if len(outputs) != 1 or outputs[0].ndim < 1 or outputs[0].shape[0] != len(y):
            self._capture_ok = False
            return
        self._val.update(outputs[0], y.to(outputs[0].device))
        self._captured = True

    def _release(self) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        self._outputs = []

    # -- the epoch's metrics -------------------------------------------------------------------

    def compute(self, trainer: Any, module: Any, present: Iterable[str]) -> dict[str, float]:
        """The insight metrics the module did not report itself (``present``), as floats.

        The module's own values win: the built-in module computes the same names with this
        module's code during its validation pass.
        """
        captured = self._captured and self._capture_ok
        self._release()
        self._captured = False
        have = set(present)
        self._self_reported = set(self.names) <= have
        out: dict[str, torch.Tensor] = {}
        if not set(WEIGHT_METRICS) <= have:
            out.update(weight_stats(weights_of(module)))
        if self.task is not None and not set(self.names) <= have:
            out.update(self._evaluate(trainer, module, captured))
        wanted = [n for n in out if n not in have]
        if not wanted:
            return {}
        # one copy to the host for all of them
        values = torch.stack([out[n].detach().float().reshape(()) for n in wanted]).tolist()
        return dict(zip(wanted, values, strict=True))

    def compute_now(self, trainer: Any, module: Any, present: Iterable[str]) -> dict[str, float]:
        """`compute` for the module's current weights outside a validation epoch (after fit:
        the reported epoch's weights loaded): the validation side by a forward pass over the
        validation loader, nothing captured; torch's generator state left as it was."""
        self._release()
        self._captured = False
        with torch.random.fork_rng(devices=[]):
            return self.compute(trainer, module, present)

    def _evaluate(self, trainer: Any, module: Any, captured: bool) -> dict[str, torch.Tensor]:
        datamodule = getattr(trainer, "datamodule", None)
        device = module.device
        if self._train_batches is None or self._train_device != device:
            # read once and kept on the module's device (a few hundred rows)
            with torch.random.fork_rng(devices=[]):  # iterating a loader draws a seed
                batches = self._make_train_batches(trainer, datamodule)
                self._train_batches = [_to(batch, device) for batch in batches]
            self._train_device = device
        training = _eval_mode(module)
        try:
            # Iterating a DataLoader draws its base seed from torch's global generator: the
            # generator's state is restored afterwards, so the training's next shuffles and
            # dropout masks are those it would have had without these metrics.
            with torch.random.fork_rng(devices=[]), torch.no_grad():
                if captured:
                    val = self._val.compute("val")
                else:
                    loader = self._val_loader(trainer, datamodule)
                    val = self._pass(module, loader, "val", on_device=False)
                train = self._pass(module, self._train_batches, "train", on_device=True)
        finally:
            _restore_mode(module, training)
        key = "nll" if self.task == "classification" else "task_loss"
        return {**val, **train, "gap": val[f"val_{key}"] - train[f"train_{key}"]}

    @staticmethod
    def _val_loader(trainer: Any, datamodule: Any) -> Any:
        loader = _first_loader(getattr(trainer, "val_dataloaders", None))
        if loader is None and datamodule is not None:
            loader = _first_loader(datamodule.val_dataloader())
        return loader

    def _make_train_batches(self, trainer: Any, datamodule: Any) -> Any:
        subset_hook = getattr(datamodule, "train_subset_batches", None)
        if subset_hook is not None:  # e.g. trainers.data.InMemoryDataModule
            return subset_hook(self.train_subset)
        loader = _first_loader(getattr(trainer, "train_dataloader", None))
        if loader is None and datamodule is not None:
            loader = _first_loader(datamodule.train_dataloader())
        val_batch = _batch_size(self._val_loader(trainer, datamodule))
        subset = _subset_batches(loader, self.train_subset, val_batch)
        if subset is not None:
            return subset
        # an iterable loader: its first rows, read once
        kept: list[Any] = []
        rows = 0
        for batch in loader:
            kept.append(batch)
            x, _ = self.to_xy(batch)
            rows += len(x)
            if rows >= self.train_subset:
                break
        return kept

    def _pass(
        self, module: Any, batches: Any, prefix: str, *, on_device: bool
    ) -> dict[str, torch.Tensor]:
        """The metrics of ``module``'s forward over ``batches`` (``on_device``: already moved)."""
        device = module.device
        if self.task == "classification":
            metrics = self._val if prefix == "val" else self._train
            metrics.reset(ece=prefix == "val")
            for batch in batches:
                x, y = self.to_xy(batch if on_device else _to(batch, device))
                metrics.update(_forward(module, x), y)
            return metrics.compute(prefix)
        mean = MeanMetric(nan_strategy="disable").to(device)
        for batch in batches:
            x, y = self.to_xy(batch if on_device else _to(batch, device))
            mean.update(self.loss(_forward(module, x), y).detach(), weight=len(y))
        return {f"{prefix}_task_loss": mean.compute()}
