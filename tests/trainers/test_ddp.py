"""Multi-device trials on CPU: Lightning DDP (gloo) over 2 processes, rank 0 alone reports.

A trial that gets pruned and one that gets cancelled must end on every rank at the same epoch:
the helper rank exits by itself (exit code 0, not killed after a hang) and no process is left.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import optuna
import pytest

from tests.trainers.conftest import fixed_space, synthetic_spec
from tests.trainers.test_objective import Recorder
from trainers import TrialCancelled, _ddp, run_trial

pytestmark = pytest.mark.slow


@pytest.fixture
def helpers(monkeypatch: pytest.MonkeyPatch) -> list[subprocess.Popen[bytes]]:
    """The helper rank processes each trial starts (recorded, not changed)."""
    started: list[subprocess.Popen[bytes]] = []
    real = _ddp.ranks

    @contextmanager
    def recording(n: int, payload: dict[str, Any]) -> Iterator[list[subprocess.Popen[bytes]]]:
        with real(n, payload) as procs:
            started.extend(procs)
            yield procs

    monkeypatch.setattr(_ddp, "ranks", recording)
    return started


def _children() -> list[int]:
    me = str(os.getpid())
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[1] == me and fields[0] != "Z":
            pids.append(int(stat.parent.name))
    return pids


def _ddp_spec(max_epochs: int) -> Any:
    spec = synthetic_spec(fixed_space(dropout=0.1, patience=100), max_epochs=max_epochs)
    return replace(spec, devices=2, torch_threads=1)


def _assert_ended_cleanly(helpers: list[subprocess.Popen[bytes]]) -> None:
    assert len(helpers) == 1
    assert [h.returncode for h in helpers] == [0]  # ended on rank 0's word, not killed
    assert _children() == []
    assert "LOCAL_RANK" not in os.environ and "WORLD_SIZE" not in os.environ


def test_a_pruned_ddp_trial_stops_every_rank(helpers: list[subprocess.Popen[bytes]]) -> None:
    study = optuna.create_study(pruner=optuna.pruners.ThresholdPruner(upper=0.0, n_warmup_steps=1))
    recorder = Recorder()
    with pytest.raises(optuna.TrialPruned, match="pruned at epoch 1"):
        run_trial(study.ask(), _ddp_spec(max_epochs=10), recorder)
    assert [r.epoch for r in recorder.epochs] == [0, 1]
    _assert_ended_cleanly(helpers)


def test_a_cancelled_ddp_trial_stops_every_rank(helpers: list[subprocess.Popen[bytes]]) -> None:
    recorder = Recorder(stop_after=2)
    with pytest.raises(TrialCancelled, match="after epoch 1"):
        run_trial(optuna.create_study().ask(), _ddp_spec(max_epochs=10), recorder)
    assert [r.epoch for r in recorder.epochs] == [0, 1]
    _assert_ended_cleanly(helpers)


def test_a_complete_ddp_trial_reports_from_rank_0_and_scores_the_test_split(
    helpers: list[subprocess.Popen[bytes]],
) -> None:
    trial = optuna.create_study().ask()
    outcome = run_trial(trial, _ddp_spec(max_epochs=3), Recorder())
    assert outcome.epochs_run == 3
    assert sorted(trial.storage.get_trial(trial._trial_id).intermediate_values) == [0, 1, 2]
    assert outcome.test_metrics is not None and "test_acc" in outcome.test_metrics
    _assert_ended_cleanly(helpers)
