"""Classification metrics accumulated over batches without per-batch host syncs.

Expected calibration error (ECE), with ``n_bins`` equal-width confidence bins over (0, 1]::

    ECE = Σ_b (|B_b| / n) · |acc(B_b) - conf(B_b)|

where a sample's confidence is its top softmax probability and it is correct when the top class
is its label. A sample of confidence c falls in bin ``ceil(c·n_bins) - 1`` (bins are closed on the
right: 1/15 belongs to the first bin).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

ECE_BINS = 15


def _bin_index(confidence: torch.Tensor, n_bins: int) -> torch.Tensor:
    return (torch.ceil(confidence * n_bins).long() - 1).clamp_(0, n_bins - 1)


def expected_calibration_error(
    probs: torch.Tensor, labels: torch.Tensor, n_bins: int = ECE_BINS
) -> float:
    """ECE of predicted class probabilities ``probs`` (n x classes) against ``labels`` (n)."""
    acc = ClassificationAccumulator(n_bins, device=probs.device)
    acc.update_probs(probs, labels)
    return float(acc.ece())


class ClassificationAccumulator:
    """Running sums for loss, accuracy and ECE over an epoch, kept as tensors on the device.

    Nothing here calls ``.item()``: the sums stay on the device until `compute` at epoch end.
    """

    def __init__(self, n_bins: int = ECE_BINS, device: torch.device | str = "cpu") -> None:
        self.n_bins = n_bins
        self.device = torch.device(device)
        self.reset()

    def reset(self) -> None:
        z = torch.zeros((), device=self.device)
        self.loss_sum = z.clone()
        self.correct = z.clone()
        self.count = 0
        self.bin_count = torch.zeros(self.n_bins, device=self.device)
        self.bin_conf = torch.zeros(self.n_bins, device=self.device)
        self.bin_correct = torch.zeros(self.n_bins, device=self.device)

    def update_probs(self, probs: torch.Tensor, labels: torch.Tensor) -> None:
        """Add a batch's predicted probabilities (accuracy and calibration only, no loss)."""
        conf, pred = probs.max(dim=1)
        hit = (pred == labels).to(probs.dtype)
        idx = _bin_index(conf, self.n_bins)
        self.correct += hit.sum()
        self.count += len(labels)
        self.bin_count.index_add_(0, idx, torch.ones_like(conf))
        self.bin_conf.index_add_(0, idx, conf)
        self.bin_correct.index_add_(0, idx, hit)

    def update(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        """Add a batch of logits: unsmoothed cross-entropy, accuracy and calibration."""
        logits = logits.float()
        self.loss_sum += F.cross_entropy(logits, labels, reduction="sum")
        self.update_probs(torch.softmax(logits, dim=1), labels)

    def loss(self) -> torch.Tensor:
        return self.loss_sum / max(self.count, 1)

    def accuracy(self) -> torch.Tensor:
        return self.correct / max(self.count, 1)

    def ece(self) -> torch.Tensor:
        gaps = (self.bin_correct - self.bin_conf).abs()
        return gaps.sum() / max(self.count, 1)

    def compute(self, prefix: str) -> dict[str, torch.Tensor]:
        """``{prefix}_loss``, ``{prefix}_acc`` and ``{prefix}_ece``."""
        return {
            f"{prefix}_loss": self.loss(),
            f"{prefix}_acc": self.accuracy(),
            f"{prefix}_ece": self.ece(),
        }
