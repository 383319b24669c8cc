"""bench/api_latency.py and bench/scaling.py against the real PostgreSQL server."""

from __future__ import annotations

from typing import Any

import api_latency
import pytest
import scaling

from service import migrations
from service.db import make_engine, make_session_factory, unit_of_work
from service.models import TrialState
from service.studies import service

pytestmark = pytest.mark.postgres


def test_populated_rows_read_back_like_worker_rows(pg_url: str) -> None:
    migrations.upgrade(pg_url)
    study_id = api_latency.populate(pg_url, n_studies=5, n_trials=50)
    engine = make_engine(pg_url)
    try:
        with unit_of_work(make_session_factory(engine)) as session:
            studies = service.list_studies(session, None, limit=10, offset=0)
            assert studies.total == 5
            study = service.resolve_study(session, str(study_id))
            page = service.list_trials(session, study, None, "-value", limit=50, offset=0)
            assert page.total == 50
            values = [t.value for t in page.items if t.value is not None]
            assert len(values) == 50
            assert values == sorted(values, reverse=True)
            assert {t.state for t in page.items} == {TrialState.complete, TrialState.pruned}
            best = service.best_result(session, study)
            complete = [t.value for t in page.items if t.state == TrialState.complete]
            assert best.value == min(v for v in complete if v is not None)
            detail = service.study_detail(session, study)
            assert detail.progress.complete == 40 and detail.progress.pruned == 10
    finally:
        engine.dispose()


@pytest.mark.slow
def test_api_latency_main_prints_ratio_last(
    pg_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: Any
) -> None:
    # pg_url: skip locally / fail under CI when PostgreSQL is unreachable
    monkeypatch.setattr("sys.argv", ["api_latency.py", "--requests", "8", "--threads", "2"])
    api_latency.main()
    lines = capsys.readouterr().out.strip().splitlines()
    assert any("| head   | trials" in line for line in lines)
    assert lines[-1].startswith("ratio: ")


@pytest.mark.slow
def test_scaling_main_runs_real_workers_and_prints_ratio_last(
    pg_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: Any
) -> None:
    argv = ["scaling.py", "--trials", "2", "--repeats", "1", "--epochs", "2", "--rows", "600"]
    monkeypatch.setattr("sys.argv", argv)
    scaling.main()
    out = capsys.readouterr().out
    # the same workload in every arm: the plain in-memory baseline and regtune's workers
    for arm in ("plain optuna (in memory)", "regtune workers (PostgreSQL)"):
        assert f"{arm} run 1 processes 1: 2 trials" in out
        assert f"{arm} run 1 processes 2: 2 trials" in out
    assert "hardware ceiling" in out
    assert "trial length (2 epochs x 600 rows, 1 process)" in out
    assert "coordination cost per trial" in out
    assert "regtune 2 workers / plain 2 processes, per run: " in out
    assert out.strip().splitlines()[-1].startswith("ratio: ")


def test_scaling_arms_share_one_spec_with_the_asked_size() -> None:
    regtune_spec = scaling.study_spec("scaling-0-1w", 7, 900, n_trials=40)
    plain_spec = scaling.study_spec("plain", 7, 900)
    assert regtune_spec.trainer_config == plain_spec.trainer_config
    assert regtune_spec.trainer_config["max_epochs"] == 7
    assert regtune_spec.trainer_config["n_samples"] == 900
    assert regtune_spec.search_space == plain_spec.search_space
    assert (regtune_spec.sampler, regtune_spec.pruner) == (plain_spec.sampler, plain_spec.pruner)
