"""bench/gate_reliability.py: own seeds per PR, both gates on the same runs, output shape."""

from __future__ import annotations

import re
from pathlib import Path

import _common
import gate_reliability as gr
import pytest

TODAY = next(label for label in gr.GATES if label.startswith("today"))
NO_TOLERANCE = next(label for label in gr.GATES if label.endswith("max-regression 0)"))


def test_training_seeds_are_never_shared_between_sides_runs_or_prs() -> None:
    seen = [
        s for side in range(1 + len(gr.CHANGES)) for pr in range(50) for s in gr.seeds(side, pr, 5)
    ]
    assert len(seen) == len(set(seen)) == (1 + len(gr.CHANGES)) * 50 * 5


def test_each_gate_judges_the_same_runs_its_own_way() -> None:
    base = [1.700, 1.702, 1.701, 1.700, 1.702]
    raw = {
        "repeats": 5,
        "runs": [
            {
                # the first run is unlucky (+0.012), the mean is the baseline's: only today's
                # single-run gate raises an alarm
                "baseline": base,
                "a seed only": [1.712, 1.695, 1.698, 1.699, 1.700],
                # worse by 0.006: under max-regression 0.01, but significant
                "b width / 3": [v + 0.006 for v in base],
                "c width / 16": [v + 0.3 for v in base],
            }
        ],
    }
    text, rates = gr.summarize(raw)
    assert rates[TODAY] == {"a seed only": 1.0, "b width / 3": 0.0, "c width / 16": 1.0}
    assert rates[gr.NEW] == {"a seed only": 0.0, "b width / 3": 0.0, "c width / 16": 1.0}
    assert rates[NO_TOLERANCE] == {"a seed only": 0.0, "b width / 3": 1.0, "c width / 16": 1.0}
    assert "1/1 (100 %" in text and "0/1 (0 %" in text


def test_short_mode_prints_the_table_and_the_ratio_last(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(_common, "OUT_DIR", tmp_path)
    gr.main(["--short", "--prs", "2"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert re.fullmatch(r"ratio: \d+\.\d\d", lines[-1])
    rows = [line for line in lines if line.startswith("| ")]
    assert len(rows) == 1 + len(gr.GATES) + 1  # header, one row per gate, the worsening
    for row in rows[1:-1]:
        assert len(re.findall(r"\d+/2 \(\d+ %", row)) == len(gr.CHANGES)
    assert (tmp_path / "gate_reliability.json").exists()
