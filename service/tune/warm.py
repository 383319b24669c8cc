"""`--warm-start`: which of a previous best's parameters can be evaluated first in this study."""

from __future__ import annotations

from typing import Any

from trainers import SearchSpace

__all__ = ["warm_start_params"]


def warm_start_params(
    previous: dict[str, Any], space: SearchSpace
) -> tuple[dict[str, Any], list[str]]:
    """The previous parameters this study searches, and a note for each one left out.

    Fixed parameters are not enqueued (the spec fixes them anyway); a value outside this study's
    search space is dropped (Optuna would otherwise evaluate it off-space or fail the trial), so
    that parameter is sampled as usual.
    """
    params: dict[str, Any] = {}
    notes: list[str] = []
    for name in space.searched():
        value = previous.get(name)
        if value is None:
            continue
        if space.contains(name, value):
            params[name] = value
        else:
            notes.append(f"{name}={value!r} is outside this study's search space; it is sampled")
    return params, notes
