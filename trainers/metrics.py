"""Classification metrics over batches of logits: NLL, accuracy and 15-bin ECE.

- NLL: unsmoothed cross-entropy, mean over samples.
- Accuracy: share of samples whose top logit is the label (micro accuracy).
- Expected calibration error (ECE), torchmetrics' ``MulticlassCalibrationError(n_bins=15,
  norm="l1")``::

      ECE = Σ_b (|B_b| / n) · |acc(B_b) - conf(B_b)|

  over 15 equal-width confidence bins of [0, 1], a sample's confidence being its top softmax
  probability and it being correct when the top class is its label (torchmetrics bins a
  confidence c with ``bucketize(c, linspace(0, 1, 16), right=True) - 1``: bins are closed on
  the left, [k/15, (k+1)/15)).

How: each batch is reduced at once (one log-softmax) to three vectors with a row per sample:
cross-entropy, top softmax probability (the exponential of the top log-probability), correct or
not; they stay on the logits' device (3 numbers per sample, not the logits). ``compute``
concatenates them once, reads NLL and accuracy off them with plain torch ops and the ECE with
torchmetrics' functional ``binary_calibration_error`` on (top probability, correct): the two
vectors ``MulticlassCalibrationError`` reduces its input to before binning
(`torchmetrics.functional.classification.calibration_error`), so the value is the multiclass
metric's (to float rounding of the probabilities), without a torchmetrics ``Metric`` object's
per-call bookkeeping, which cost more than the arithmetic on small models. Nothing is read back
to the host before the caller does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchmetrics.classification import MulticlassCalibrationError
from torchmetrics.functional.classification import binary_calibration_error

ECE_BINS = 15


def _two_columns(logits: torch.Tensor) -> torch.Tensor:
    """A single-logit binary classifier's output ``(n,)`` or ``(n, 1)`` as two-class logits."""
    if logits.ndim == 1 or (logits.ndim == 2 and logits.shape[1] == 1):
        z = logits.reshape(-1, 1)
        return torch.cat([torch.zeros_like(z), z], dim=1)
    return logits


class ClassificationMetrics:
    """Unsmoothed NLL, accuracy and 15-bin ECE over batches of logits (per-sample vectors on
    the logits' device; nothing is read back until the caller reads `compute`'s tensors)."""

    def __init__(self, n_bins: int = ECE_BINS, *, ece: bool = True) -> None:
        self.n_bins = n_bins
        self.with_ece = ece
        self._nll: list[torch.Tensor] = []
        self._conf: list[torch.Tensor] = []
        self._correct: list[torch.Tensor] = []

    def update(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        logits = _two_columns(logits.detach()).float()
        labels = labels.reshape(-1).long()
        # one log-softmax for all three (F.cross_entropy is nll_loss of it): on a CPU a
        # softmax over a few classes costs more than the rest of these ops together
        log_probs = torch.log_softmax(logits, dim=1)
        self._nll.append(F.nll_loss(log_probs, labels, reduction="none"))
        top_log_prob, top = log_probs.max(dim=1)
        self._correct.append(top.eq(labels))
        if self.with_ece:
            self._conf.append(top_log_prob.exp())  # the top softmax probability

    def reset(self, *, ece: bool | None = None) -> None:
        """Start over; ``ece`` switches the calibration error on or off."""
        if ece is not None:
            self.with_ece = ece
        self._nll, self._conf, self._correct = [], [], []

    @property
    def updated(self) -> bool:
        """Whether a batch was added since the last reset."""
        return bool(self._nll)

    def _cat(self, parts: list[torch.Tensor]) -> torch.Tensor:
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def compute(self, prefix: str, loss_name: str = "nll") -> dict[str, torch.Tensor]:
        """``{prefix}_{loss_name}``, ``{prefix}_acc`` and (with ECE) ``{prefix}_ece``."""
        if not self._nll:
            raise ValueError(f"no {prefix} batches: cannot compute {prefix} metrics")
        correct = self._cat(self._correct)
        out = {
            f"{prefix}_{loss_name}": self._cat(self._nll).mean(),
            f"{prefix}_acc": correct.float().mean(),
        }
        if self.with_ece and len(self._conf) == len(self._nll):
            out[f"{prefix}_ece"] = binary_calibration_error(
                self._cat(self._conf), correct, n_bins=self.n_bins, norm="l1", validate_args=False
            )
        return out


def expected_calibration_error(
    probs: torch.Tensor, labels: torch.Tensor, n_bins: int = ECE_BINS
) -> float:
    """ECE of predicted class probabilities ``probs`` (n x classes) against ``labels`` (n), with
    torchmetrics' ``MulticlassCalibrationError`` (the reference `ClassificationMetrics` matches)."""
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
        return super().compute("x")["x_loss"]

    def accuracy(self) -> torch.Tensor:
        return super().compute("x")["x_acc"]

    def ece(self) -> torch.Tensor:
        return super().compute("x")["x_ece"]
