"""The regularized classifier: applies one `RegularizationParams` to any backbone.

- ``weight_decay``: decoupled (AdamW) decay on the penalized weights only.
- ``l1``: λ₁·Σ|w| over the same weights, added to the training loss.
- ``dropout``: the backbone is built with it (see `mlp`); Lightning switches it off in eval.
- ``label_smoothing``: applied to the training loss only; every reported loss is unsmoothed.

"Weights" are parameters with two or more dimensions (linear and convolution kernels,
embeddings). Biases and normalization parameters are one-dimensional, so they are neither decayed
nor L1-penalized.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from lightning.pytorch.strategies import SingleDeviceStrategy
from torch import nn

from trainers.insight import NEAR_ZERO, TRAIN_SUBSET, weight_stats, weights_of
from trainers.metrics import ClassificationMetrics
from trainers.params import RegularizationParams

#: What `RegularizedClassifier` logs once per epoch (after the validation pass). The names of
#: regtune's insight metrics (`trainers.insight`) plus the built-ins' historical ones:
#: ``val_loss`` (= ``val_nll``) and ``train_eval_loss`` (= ``train_nll``).
EPOCH_METRICS: tuple[str, ...] = (
    "train_loss",
    "train_eval_loss",
    "train_nll",
    "train_acc",
    "val_loss",
    "val_nll",
    "val_acc",
    "val_ece",
    "gap",
    "near_zero_frac",
    "weight_l2",
)
#: Computed every epoch whatever the insight cadence (the objective's usual metrics).
ALWAYS: tuple[str, ...] = ("train_loss", "val_loss", "val_nll", "val_acc")
#: What `RegularizedClassifier` logs on the test split.
TEST_METRICS: tuple[str, ...] = ("test_loss", "test_acc", "test_ece")

# Precisions whose backward is a plain loss.backward() (no loss scaling, no unscaling before the
# step): with these and one device the module may call the torch optimizer directly.
_UNSCALED_PRECISIONS = frozenset({"32-true", "64-true", "bf16-mixed", "bf16-true"})


def _count_optimizer_steps(trainer: Any, steps: int) -> None:
    """Add ``steps`` direct optimizer steps to ``trainer.global_step``.

    Lightning counts manual-optimization steps when its optimizer wrapper is stepped; the
    module's direct steps bypass it, so they are added here, once per training batch. Should a
    Lightning release move this counter, only ``global_step`` is affected (a test checks it).
    """
    loop = getattr(getattr(trainer, "fit_loop", None), "epoch_loop", None)
    progress = getattr(getattr(loop, "manual_optimization", None), "optim_step_progress", None)
    if progress is not None:
        progress.increment_by(steps)


def _logged_names(trainer: Any, names: list[str]) -> set[str]:
    """Which epoch metrics go through ``self.log``: all with a logger, else the monitored ones."""
    if trainer.loggers:
        return set(names)
    return {m for cb in trainer.callbacks if isinstance(m := getattr(cb, "monitor", None), str)}


def _train_rows(datamodule: Any) -> Any:
    """The data module's fixed training subset (`TRAIN_SUBSET` rows), else its whole training
    split in eval order, else None."""
    subset = getattr(datamodule, "train_subset_batches", None)
    if subset is not None:
        return subset(TRAIN_SUBSET)
    whole = getattr(datamodule, "train_eval_batches", None)
    return whole() if whole is not None else None


def mlp(
    n_in: int, hidden: list[int] | tuple[int, ...], n_out: int, dropout: float
) -> nn.Sequential:
    """``Linear → ReLU → Dropout(p)`` per hidden layer, then a linear head (logits)."""
    layers: list[nn.Module] = []
    width = n_in
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        if dropout > 0:  # Dropout(0) is the identity; skipping it saves a kernel per layer
            layers.append(nn.Dropout(dropout))
        width = h
    layers.append(nn.Linear(width, n_out))
    return nn.Sequential(*layers)


def penalized_weights(module: nn.Module) -> list[nn.Parameter]:
    """Parameters that weight decay and L1 act on: those with ≥ 2 dimensions (the same weights
    regtune's ``weight_l2`` and ``near_zero_frac`` are computed over)."""
    return weights_of(module)


def near_zero_fraction(weights: list[nn.Parameter], threshold: float = NEAR_ZERO) -> torch.Tensor:
    """Fraction of entries with |w| < threshold across ``weights`` (`weight_stats`' value)."""
    return weight_stats(weights, threshold)["near_zero_frac"]


class RegularizedClassifier(pl.LightningModule):
    """Classifier over ``backbone`` (an ``nn.Module`` mapping features to logits).

    Computes once per epoch, at the end of the validation pass (see `EPOCH_METRICS`):

    - ``train_loss``: mean training loss over the epoch's batches as optimized (with label
      smoothing, without the L1 term), measured in train mode while the weights change.
    - ``val_nll`` = ``val_loss`` (unsmoothed cross-entropy), ``val_acc``, ``val_ece`` (15-bin
      ECE), with `trainers.metrics.ClassificationMetrics` (torchmetrics), as regtune computes
      them for any declared classifier (`trainers.insight`).
    - ``train_nll`` = ``train_eval_loss`` / ``train_acc``: the same on a fixed subset of the
      training split (`TRAIN_SUBSET` rows; all of them for the bundled data sets) in eval mode
      (dropout off) with the epoch's final weights.
    - ``gap`` = ``val_nll - train_nll``: the generalization gap, both sides measured the same
      way (same weights, eval mode, no smoothing).
    - ``weight_l2``, ``near_zero_frac``: `trainers.insight.weight_stats` over the penalized
      weights (what weight decay and L1 drive down and up).

    ``insight_every`` (the objective sets it from the trainer's cadence) computes all but
    `ALWAYS` only every that many epochs (0: never).

    All of them land in `epoch_metrics` (Python floats, one host sync per epoch), which
    regtune's objective reads. Through ``self.log`` (``trainer.callback_metrics``) go all of them
    when the Trainer has a logger, otherwise only those a callback monitors (its ``monitor``;
    regtune's objective adds none, it early-stops on ``epoch_metrics``): each ``self.log``
    call costs Lightning about as much as a training step of a small MLP, and without a logger
    nothing else reads them.

    The training-split evaluation uses the data module's ``train_subset_batches(n)`` (or
    ``train_eval_batches()``) when it has one.

    ``training_step`` cuts whatever batch it gets into minibatches of ``params.batch_size`` rows
    and makes one optimizer step per minibatch, so it accepts a whole shuffled epoch as one
    batch (`InMemoryDataModule(whole_epoch=True)`) as well as ordinary batches.

    Args:
        backbone: the network, built with the sampled dropout.
        params: the regularization settings.
        learning_rate: AdamW learning rate.
    """

    def __init__(
        self, backbone: nn.Module, params: RegularizationParams, *, learning_rate: float = 1e-3
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.reg = params
        self.learning_rate = learning_rate
        self._weights = penalized_weights(backbone)
        # Manual optimization: on these small models the per-step overhead of Lightning's
        # automatic optimization (closure, precision wrapper, a dozen hooks) is a sizeable share
        # of the step time. Consequence: Trainer(gradient_clip_val=...) and
        # accumulate_grad_batches do not apply to this module (regtune's objective uses neither).
        self.automatic_optimization = False
        self._train_stats = torch.zeros(2)
        self._eval = ClassificationMetrics()
        self._train_eval = ClassificationMetrics(ece=False)
        #: Compute the insight metrics every this many epochs (0: never; see the class doc).
        self.insight_every = 1
        #: The last validation epoch's metrics (see the class docstring), as floats.
        self.epoch_metrics: dict[str, float] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        weight_ids = {id(p) for p in self._weights}
        others = [p for p in self.backbone.parameters() if id(p) not in weight_ids]
        groups: list[dict[str, Any]] = [
            {"params": self._weights, "weight_decay": self.reg.weight_decay},
            {"params": others, "weight_decay": 0.0},
        ]
        return torch.optim.AdamW(groups, lr=self.learning_rate)

    def l1_penalty(self) -> torch.Tensor:
        """Σ|w| over the penalized weights (not multiplied by λ₁)."""
        return torch.stack([w.abs().sum() for w in self._weights]).sum()

    # -- training ---------------------------------------------------------------------------

    def on_train_epoch_start(self) -> None:
        # In-place updates below: assigning attributes of an nn.Module goes through its
        # (slow) __setattr__, and `.item()` would sync with the device every step.
        self._train_stats = torch.zeros(2, device=self.device)  # [Σ loss·n, n]

    def training_loss(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(data_loss, total)``: the smoothed cross-entropy, and it plus λ₁·Σ|w|."""
        loss = F.cross_entropy(self.backbone(x), y, label_smoothing=self.reg.label_smoothing)
        if self.reg.l1 > 0:
            return loss, loss + self.reg.l1 * self.l1_penalty()
        return loss, loss

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        """Optimize on ``batch`` in minibatches of ``params.batch_size`` rows, one step each.

        With a loader of ordinary batches (at most ``batch_size`` rows) this is one optimizer
        step per batch. `InMemoryDataModule(whole_epoch=True)` hands over the whole shuffled
        epoch at once, so Lightning's per-batch loop runs once per epoch while the optimization
        stays the same: the same slices, in the same order, one AdamW step per slice.
        """
        x, y = batch
        size = self.reg.batch_size
        wrapped = self.optimizers()
        assert not isinstance(wrapped, list)  # configure_optimizers returns one optimizer
        direct = self._direct_steps()
        # Direct: the bare torch optimizer and loss.backward(), i.e. what Lightning's wrappers
        # end up calling, minus the four no-op hooks and the precision closure they add to
        # every step. Otherwise (a precision that scales the loss, a multi-device strategy) the
        # wrappers, which handle those.
        optimizer: Any = wrapped.optimizer if direct else wrapped
        stats = self._train_stats
        steps = 0
        for start in range(0, len(y), size):
            xb, yb = x[start : start + size], y[start : start + size]
            data_loss, loss = self.training_loss(xb, yb)
            stats[0].add_(data_loss.detach(), alpha=len(yb))
            stats[1].add_(len(yb))
            optimizer.zero_grad()
            if direct:
                loss.backward()  # type: ignore[no-untyped-call]
            else:
                self.manual_backward(loss)
            optimizer.step()
            steps += 1
        if direct:
            _count_optimizer_steps(self.trainer, steps)

    def _direct_steps(self) -> bool:
        """Whether backward and the optimizer step can bypass Lightning's wrappers unchanged."""
        trainer = self.trainer
        return trainer.precision in _UNSCALED_PRECISIONS and isinstance(
            trainer.strategy, SingleDeviceStrategy
        )

    # -- validation -------------------------------------------------------------------------

    def _insight_due(self) -> bool:
        every = self.insight_every
        return every > 0 and self.current_epoch % every == 0

    def on_validation_epoch_start(self) -> None:
        self._eval.reset(ece=self._insight_due())

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        self._eval.update(self.backbone(x), y)

    def on_validation_epoch_end(self) -> None:
        metrics = self._eval.compute("val")
        metrics["val_loss"] = metrics["val_nll"]
        if self._train_stats[1] > 0:
            metrics["train_loss"] = self._train_stats[0] / self._train_stats[1]
        if self._insight_due():
            rows = _train_rows(getattr(self.trainer, "datamodule", None))
            if rows is not None:
                train = self._train_eval
                train.reset()
                for x, y in rows:
                    train.update(self.backbone(x.to(self.device)), y.to(self.device))
                metrics.update(train.compute("train"))
                metrics["train_eval_loss"] = metrics["train_nll"]
                metrics["gap"] = metrics["val_nll"] - metrics["train_nll"]
            metrics.update(weight_stats(self._weights))
        # One device sync for all of them (float32 values, as self.log would have kept them).
        names = list(metrics)
        values = torch.stack([metrics[n].float().reshape(()) for n in names]).tolist()
        self.epoch_metrics = dict(zip(names, values, strict=True))
        wanted = _logged_names(self.trainer, names)
        for name in names:
            if name in wanted:
                self.log(name, metrics[name], on_step=False, on_epoch=True)

    # -- test -------------------------------------------------------------------------------

    def on_test_epoch_start(self) -> None:
        self._eval.reset(ece=True)

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        self._eval.update(self.backbone(x), y)

    def on_test_epoch_end(self) -> None:
        self.log_dict(self._eval.compute("test", "loss"), on_step=False, on_epoch=True)
