"""Classification metrics over batches of logits, computed with torchmetrics.

- NLL: unsmoothed cross-entropy, mean over samples (``MeanMetric``).
- Accuracy: share of samples whose top logit is the label (``MulticlassAccuracy``, micro).
- Expected calibration error (ECE): ``MulticlassCalibrationError(n_bins=15, norm="l1")``::

      ECE = Σ_b (|B_b| / n) · |acc(B_b) - conf(B_b)|

  over 15 equal-width confidence bins of [0, 1], a sample's confidence being its top softmax
  probability and it being correct when the top class is its label (torchmetrics bins a
  confidence c with ``bucketize(c, linspace(0, 1, 16), right=True) - 1``: bins are closed on
  the left, [k/15, (k+1)/15)).

The states stay on the logits' device; nothing is read back before ``compute``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchmetrics.aggregation import MeanMetric
from torchmetrics.classification import MulticlassAccuracy, MulticlassCalibrationError

ECE_BINS = 15


def _two_columns(logits: torch.Tensor) -> torch.Tensor:
    """A single-logit binary classifier's output ``(n,)`` or ``(n, 1)`` as two-class logits."""
    if logits.ndim == 1 or (logits.ndim == 2 and logits.shape[1] == 1):
        z = logits.reshape(-1, 1)
        return torch.cat([torch.zeros_like(z), z], dim=1)
    return logits


class ClassificationMetrics:
    """Unsmoothed NLL, accuracy and 15-bin ECE over batches of logits (torchmetrics states on
    the logits' device; nothing is read back until `compute`)."""

    def __init__(self, n_bins: int = ECE_BINS, *, ece: bool = True) -> None:
        self.n_bins = n_bins
        self.with_ece = ece
        self._nll = MeanMetric(nan_strategy="disable")
        self._acc: MulticlassAccuracy | None = None
        self._ece: MulticlassCalibrationError | None = None
        self._updated = False
        self._n_classes = 0

    def update(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        logits = _two_columns(logits.detach()).float()
        labels = labels.reshape(-1).long()
        if self._acc is None:  # the number of classes is known from the first batch
            n_classes = self._n_classes = int(logits.shape[1])
            self._nll = self._nll.to(logits.device)
            self._acc = MulticlassAccuracy(n_classes, average="micro", validate_args=False).to(
                logits.device
            )
            if self.with_ece:
                self._ece = MulticlassCalibrationError(
                    n_classes, n_bins=self.n_bins, norm="l1", validate_args=False
                ).to(logits.device)
        assert self._acc is not None
        self._updated = True
        self._nll.update(F.cross_entropy(logits, labels, reduction="none"))
        self._acc.update(logits, labels)
        if self._ece is not None and self.with_ece:
            self._ece.update(torch.softmax(logits, dim=1), labels)

    def reset(self, *, ece: bool | None = None) -> None:
        """Start over (keeping the torchmetrics objects: building them costs more than an
        epoch's update of a small model); ``ece`` switches the calibration error on or off."""
        if ece is not None:
            self.with_ece = ece
        self._nll.reset()
        if self._acc is not None:
            self._acc.reset()
        if self._ece is not None:
            self._ece.reset()
        elif self.with_ece and self._acc is not None:
            self._ece = MulticlassCalibrationError(
                self._n_classes, n_bins=self.n_bins, norm="l1", validate_args=False
            ).to(self._nll.device)
        self._updated = False

    @property
    def updated(self) -> bool:
        """Whether a batch was added since the last reset."""
        return self._updated

    def compute(self, prefix: str, loss_name: str = "nll") -> dict[str, torch.Tensor]:
        """``{prefix}_{loss_name}``, ``{prefix}_acc`` and (with ECE) ``{prefix}_ece``."""
        if self._acc is None or not self._updated:
            raise ValueError(f"no {prefix} batches: cannot compute {prefix} metrics")
        out = {f"{prefix}_{loss_name}": self._nll.compute(), f"{prefix}_acc": self._acc.compute()}
        if self._ece is not None and self.with_ece:
            out[f"{prefix}_ece"] = self._ece.compute()
        return out


def expected_calibration_error(
    probs: torch.Tensor, labels: torch.Tensor, n_bins: int = ECE_BINS
) -> float:
    """ECE of predicted class probabilities ``probs`` (n x classes) against ``labels`` (n)."""
    metric = MulticlassCalibrationError(
        int(probs.shape[1]), n_bins=n_bins, norm="l1", validate_args=False
    )
    metric.update(probs, labels)
    return float(metric.compute())


class ClassificationAccumulator(ClassificationMetrics):
    """`ClassificationMetrics` under the names the built-in module has always reported:
    ``compute(prefix)`` gives ``{prefix}_loss``, ``{prefix}_acc`` and ``{prefix}_ece``."""

    def compute(self, prefix: str, loss_name: str = "loss") -> dict[str, torch.Tensor]:
        return super().compute(prefix, loss_name)

    def loss(self) -> torch.Tensor:
        return self._nll.compute()

    def accuracy(self) -> torch.Tensor:
        return super().compute("x")["x_acc"]

    def ece(self) -> torch.Tensor:
        return super().compute("x")["x_ece"]
