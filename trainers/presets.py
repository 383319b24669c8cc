"""Named search-space presets: sensible priors a spec asks for by name.

A spec writes ``search_space: {preset: standard, dropout: {low: 0.1, high: 0.3}}``: the preset
fills every parameter the spec does not give, and what the spec gives wins (see
`trainers.space.SearchSpace`). Each preset is a plain search-space document, the same shape a
user writes, covering all six parameters.

Why these priors:

- Weight decay and L1 strengths matter by orders of magnitude (1e-5 and 1e-4 differ as much as
  1e-2 and 1e-1), so both are always searched on a log scale; a linear range spends nearly all
  its samples in the top decade.
- Dropout and label smoothing act on a bounded, roughly linear scale, so their ranges are linear
  and stay well below 1 (beyond about 0.5 dropout rarely helps a model trained from scratch).
- Batch sizes are powers of two, as choices: they are few, and categorical choices also keep the
  spaces usable by samplers that model each value separately.
- Early-stopping patience is a small integer range; its lower end also sets how long the default
  (``auto``) pruner waits before pruning.
- L1 is fixed at 0 except in ``sparse``: it changes what the model becomes (sparse weights), so it
  is opt-in rather than something every study pays search budget for.

`fine-tune` uses lighter ranges because a pretrained model already encodes a strong prior (and
typically sees a small data set): heavy weight decay or dropout mostly erases what it learned.
`wide` trades sample efficiency for coverage, for a model nobody has tuned before.

Names are part of the contract: stored specs carry them and workers re-validate stored specs, so
a preset is never removed or renamed (add a new one instead). Changing a preset's ranges is safe
for existing studies, whose stored specs hold the expanded parameters.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

__all__ = ["PRESETS", "Preset", "UnknownPresetError", "get_preset", "preset_names"]

ParamDocument = Mapping[str, Any]


@dataclass(frozen=True)
class Preset:
    """A named search-space document.

    Attributes:
        name: what a spec writes as ``search_space.preset``.
        description: one line for listings (API, CLI).
        search_space: parameter name → ``{low, high, log?, step?}``, ``{choices}`` or ``{fixed}``.
    """

    name: str
    description: str
    search_space: Mapping[str, ParamDocument]

    def document(self) -> dict[str, dict[str, Any]]:
        """A fresh, mutable copy of the preset's search-space document."""
        return {name: copy.deepcopy(dict(spec)) for name, spec in self.search_space.items()}


class UnknownPresetError(ValueError):
    """A preset name that is not registered; the message lists the known ones."""


_STANDARD: dict[str, ParamDocument] = {
    "weight_decay": {"low": 1e-6, "high": 1e-1, "log": True},
    "l1": {"fixed": 0.0},
    "dropout": {"low": 0.0, "high": 0.5},
    "label_smoothing": {"low": 0.0, "high": 0.2},
    "batch_size": {"choices": [32, 64, 128, 256]},
    "patience": {"low": 3, "high": 10},
}


def _preset(name: str, description: str, space: dict[str, ParamDocument]) -> Preset:
    return Preset(name, description, MappingProxyType(space))


_ALL = (
    _preset(
        "standard",
        "Training from scratch (the general default): log-scale weight decay, moderate dropout "
        "and label smoothing, no L1.",
        _STANDARD,
    ),
    _preset(
        "sparse",
        "standard plus a log-scale L1 penalty (1e-7..1e-3), for sparse weights.",
        {**_STANDARD, "l1": {"low": 1e-7, "high": 1e-3, "log": True}},
    ),
    _preset(
        "fine-tune",
        "Fine-tuning a pretrained model: light weight decay, dropout and label smoothing; "
        "smaller batches.",
        {
            "weight_decay": {"low": 1e-5, "high": 1e-2, "log": True},
            "l1": {"fixed": 0.0},
            "dropout": {"low": 0.0, "high": 0.3},
            "label_smoothing": {"low": 0.0, "high": 0.1},
            "batch_size": {"choices": [16, 32, 64]},
            "patience": {"low": 2, "high": 6},
        },
    ),
    _preset(
        "wide",
        "Exploring an untuned model: broad ranges (weight decay 1e-8..1, dropout to 0.8); "
        "needs more trials.",
        {
            "weight_decay": {"low": 1e-8, "high": 1.0, "log": True},
            "l1": {"fixed": 0.0},
            "dropout": {"low": 0.0, "high": 0.8},
            "label_smoothing": {"low": 0.0, "high": 0.3},
            "batch_size": {"choices": [16, 32, 64, 128, 256, 512]},
            "patience": {"low": 2, "high": 20},
        },
    ),
)

PRESETS: Mapping[str, Preset] = MappingProxyType({p.name: p for p in _ALL})
"""Every preset by name, the general default (`standard`) first."""


def preset_names() -> list[str]:
    """The registered preset names, sorted."""
    return sorted(PRESETS)


def get_preset(name: str) -> Preset:
    """The preset called `name`.

    Raises:
        UnknownPresetError: no preset has that name (the message lists the known names).
    """
    try:
        return PRESETS[name]
    except KeyError:
        raise UnknownPresetError(
            f"unknown preset {name[:64]!r}; choose one of: {', '.join(preset_names())}"
        ) from None
