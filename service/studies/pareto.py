"""The Pareto set of a multi-objective study: trials no other trial beats on every objective."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["pareto_indices"]


def pareto_indices(values: Sequence[Sequence[float]], maximize: Sequence[bool]) -> list[int]:
    """Indices of the non-dominated rows of `values`, ordered by the first objective.

    A row dominates another when it is at least as good on every objective and better on one
    (Optuna's definition; equal rows are both kept). Rows are visited in lexicographic order of
    the objectives (to minimize), so only earlier rows can dominate a row: O(n * front size).
    """
    if not values:
        return []
    signs = np.where(np.asarray(maximize, dtype=bool), -1.0, 1.0)
    points = np.asarray(values, dtype=float) * signs
    order = np.lexsort(points.T[::-1])  # the first objective is the primary key
    kept = np.empty_like(points)
    front: list[int] = []
    for index in order:
        point = points[index]
        seen = kept[: len(front)]
        if len(front) and bool(
            np.any(np.all(seen <= point, axis=1) & np.any(seen < point, axis=1))
        ):
            continue
        kept[len(front)] = point
        front.append(int(index))
    return front
