"""bench/insight_cost.py runs end to end with tiny settings and prints its table and ratio."""

from __future__ import annotations

import re

import insight_cost
import pytest
import torch


def test_prints_a_row_per_model_and_the_ratio_last(capsys: pytest.CaptureFixture[str]) -> None:
    threads = torch.get_num_threads()
    try:
        insight_cost.main(["--epochs", "3", "--repeats", "1", "--models", "digits,cnn"])
    finally:
        torch.set_num_threads(threads)
    lines = capsys.readouterr().out.strip().splitlines()
    assert re.fullmatch(r"ratio: \d+\.\d\d", lines[-1])
    rows = {line.split("|")[1].strip(): line for line in lines if line.startswith("| ")}
    assert {"digits-mlp", "insight-cnn"} <= set(rows)
    for name in ("digits-mlp", "insight-cnn"):
        cells = [c.strip() for c in rows[name].strip("|").split("|")]
        assert float(cells[1]) >= 0  # CPU ms of an epoch without the metrics
        assert float(cells[3]) > 0 and float(cells[4]) > 0  # CPU and wall ratios
        # the default cadence (every 2nd epoch) pays half an epoch-with-metrics' extra
        assert float(cells[6]) == pytest.approx(1 + (float(cells[3]) - 1) / 2, abs=2e-3)
    default_ratios = [
        float(rows[n].strip("|").split("|")[6]) for n in ("digits-mlp", "insight-cnn")
    ]
    assert float(lines[-1].split()[1]) == pytest.approx(max(default_ratios), abs=6e-3)


def test_refuses_bad_settings() -> None:
    with pytest.raises(SystemExit):
        insight_cost.main(["--models", "resnet"])
    with pytest.raises(SystemExit):
        insight_cost.main(["--epochs", "2"])  # no epoch pair to compare
