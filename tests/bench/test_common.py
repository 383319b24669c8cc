"""bench/_common.py: the statistics and the table every bench script prints."""

from __future__ import annotations

import math
from collections.abc import Callable

import _common


def test_percentile_interpolates_like_numpy() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert _common.percentile(values, 50) == 50.5
    assert _common.percentile(values, 95) == 95.05
    assert _common.percentile(values, 100) == 100.0
    assert math.isnan(_common.percentile([], 50))


def test_median_skips_nan_and_keeps_never_reached() -> None:
    assert _common.median([1.0, math.nan, 3.0]) == 2.0
    # "never reached" (inf) is a real outcome: two of three seeds never reached -> inf
    assert _common.median([0.2, math.inf, math.inf]) == math.inf
    assert math.isnan(_common.median([math.nan]))


def test_table_and_ratio_line() -> None:
    text = _common.table(["arm", "x"], [["a", 1.23456], ["b", math.inf], ["c", None]])
    lines = text.splitlines()
    assert lines[0].startswith("| arm")
    assert "1.235" in lines[2]
    assert "never" in lines[3]
    assert lines[4].split("|")[2].strip() == "-"
    assert _common.ratio_line(0.123) == "ratio: 0.12"


def test_alternate_interleaves_arms() -> None:
    order: list[str] = []

    def arm(name: str) -> Callable[[int], int]:
        def run(i: int) -> int:
            order.append(f"{name}{i}")
            return i

        return run

    results = _common.alternate({"a": arm("a"), "b": arm("b")}, 2)
    assert order == ["a0", "b0", "a1", "b1"]
    assert results == {"a": [0, 1], "b": [0, 1]}
