"""`--warm-start`: which of a previous best's parameters can be evaluated first in this study."""

from __future__ import annotations

from typing import Any

import optuna

from service.spec import StudySpec

__all__ = ["warm_start_params"]


def _contains(dist: optuna.distributions.BaseDistribution, value: Any) -> bool:
    if isinstance(dist, optuna.distributions.CategoricalDistribution):
        return value in dist.choices
    numeric = optuna.distributions.IntDistribution | optuna.distributions.FloatDistribution
    if isinstance(dist, numeric):
        return isinstance(value, int | float) and dist.low <= value <= dist.high
    return False


def warm_start_params(
    previous: dict[str, Any], spec: StudySpec
) -> tuple[dict[str, Any], list[str]]:
    """The previous parameters this study searches, and a note for each one left out.

    Fixed parameters are not enqueued (the spec fixes them anyway); a value outside this study's
    search space is dropped (Optuna would otherwise evaluate it off-space or fail the trial), so
    that parameter is sampled as usual.
    """
    params: dict[str, Any] = {}
    notes: list[str] = []
    for name, dist in spec.search_space.distributions().items():
        value = previous.get(name)
        if value is None:
            continue
        if _contains(dist, value):
            params[name] = value
        else:
            notes.append(f"{name}={value!r} is outside this study's search space; it is sampled")
    return params, notes
