"""The reference run and confirmation over REST and SQL, and the ranking by mean.

The end-to-end test runs the real worker on the built-in synthetic-mlp trainer; the ranking
tests store constructed values (so the expected winner is known) and read them through the
same service functions the endpoints call.
"""

from __future__ import annotations

import math
import statistics
from datetime import UTC, datetime
from typing import Any

import jsonschema
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, text
from typer.testing import CliRunner

from service.app import create_app
from service.cli import app as cli
from service.db import make_engine, make_session_factory, unit_of_work
from service.models import StudyRecord, TrialRecord, TrialRole, TrialState, utcnow
from service.studies import service as studies
from service.studies.confirmation import ConfigRuns, rank_by_mean, run_stats
from service.tune.errors import ExitCode
from service.tune.gate import Verdict
from service.tune.output import build_output, output_schema
from service.tune.progress import BarReporter, Tally, trial_line
from service.tune.summary import render_summary
from service.worker import repository as worker_repo
from tests.api.conftest import run_worker_until_idle
from tests.support import serve_in_thread, settings_for, tiny_spec

# Student t quantile t(0.975, df=2), from tables
T_975_DF2 = 4.302652729911275


def test_reference_and_confirmation_over_rest_and_sql(
    client: TestClient, migrated_db_url: str
) -> None:
    spec = tiny_spec("extras", n_trials=3, reference=True, confirm={"top_k": 2, "repeats": 1})
    created = client.post("/api/v1/studies", json=spec)
    assert created.status_code == 201, created.text
    study_id = created.json()["id"]
    assert created.json()["progress"]["extra"] == 3  # 1 reference + 2 x 1 repeats

    assert run_worker_until_idle(migrated_db_url, study_id) == 6

    best = client.get(f"/api/v1/studies/{study_id}/best").json()
    assert best["status"] == "completed"
    progress = best["progress"]
    assert (progress["n_trials"], progress["finished"]) == (3, 3)
    assert (progress["extra"], progress["extra_finished"]) == (3, 3)

    reference = best["reference"]
    assert reference["state"] == "complete" and reference["value"] is not None
    params = reference["params"]
    assert (params["weight_decay"], params["l1"], params["dropout"]) == (0.0, 0.0, 0.0)
    assert params["label_smoothing"] == 0.0
    assert params["patience"] == spec["trainer_config"]["max_epochs"]  # no early stopping

    conf = best["confirmation"]
    assert conf["n"] == 2 and len(conf["values"]) == 2
    assert conf["trial_numbers"][0] == best["trial_number"]  # the search run comes first
    assert best["value"] == pytest.approx(statistics.fmean(conf["values"]))
    assert conf["ci95_low"] < conf["mean"] < conf["ci95_high"]

    trials = client.get(f"/api/v1/studies/{study_id}/trials?limit=100").json()["items"]
    roles = sorted(t["role"] for t in trials)
    assert roles == ["confirm", "confirm", "reference", "search", "search", "search"]
    confirms = [t for t in trials if t["role"] == "confirm"]
    search_numbers = {t["number"] for t in trials if t["role"] == "search"}
    assert {t["repeat_of"] for t in confirms} <= search_numbers
    assert all(t["train_seed"] is not None for t in confirms)

    listed = client.get("/api/v1/studies").json()["items"]
    (row,) = [s for s in listed if s["id"] == study_id]
    assert row["reference_value"] == reference["value"]
    assert row["best_value"] == pytest.approx(best["value"])  # the best mean, as /best

    # regtune tune's JSON carries them in /best's shape, valid against its schema
    now = datetime.now(UTC)
    document = build_output(
        mode="local",
        server=None,
        study=client.get(f"/api/v1/studies/{study_id}").json(),
        best=best,
        started=now,
        finished=now,
        verdict=Verdict(passed=True),
        exit_code=ExitCode.PASSED,
        warm_start=None,
        baseline=None,
    )
    jsonschema.Draft202012Validator(output_schema()).validate(document)
    assert document["best"]["reference"] == reference
    assert document["best"]["confirmation"] == conf
    assert document["best_value"] == best["value"]
    summary = render_summary(document)
    assert "| what regularization bought | tuned | regularization off |" in summary
    assert f"| confirmed | mean {conf['mean']:.6g}" in summary

    with serve_in_thread(create_app(settings_for(migrated_db_url))) as server:
        shown = CliRunner().invoke(cli, ["best", str(study_id), "--server", server])
    assert shown.exit_code == 0, shown.output
    assert "reference run, regularization off" in shown.stdout
    assert f"confirmed over 2 runs (trials {best['trial_number']}," in shown.stdout

    engine = make_engine(migrated_db_url)
    try:
        with engine.connect() as conn:
            view = conn.execute(
                text(
                    "SELECT role, count(*) FROM regtune_trial_results "
                    "WHERE study = 'extras' GROUP BY role ORDER BY role"
                )
            ).all()
    finally:
        engine.dispose()
    assert [tuple(r) for r in view] == [("confirm", 2), ("reference", 1), ("search", 3)]


def test_run_stats_mean_std_and_student_t_interval() -> None:
    stats = run_stats([0.12, 0.12, 0.13])
    assert stats is not None
    std = statistics.stdev([0.12, 0.12, 0.13])
    half = T_975_DF2 * std / math.sqrt(3)
    assert stats.n == 3
    assert stats.mean == pytest.approx(0.37 / 3) and stats.std == pytest.approx(std)
    assert stats.ci95_low == pytest.approx(0.37 / 3 - half)
    assert stats.ci95_high == pytest.approx(0.37 / 3 + half)
    one = run_stats([0.5, float("nan")])
    assert one is not None and (one.n, one.std, one.ci95_low) == (1, None, None)
    assert run_stats([]) is None


def test_rank_by_mean_ignores_single_runs_and_respects_direction() -> None:
    lucky = ConfigRuns(0, [0.10, 0.20, 0.22], [0, 3, 5])
    steady = ConfigRuns(1, [0.12, 0.12, 0.13], [1, 4, 6])
    unconfirmed = ConfigRuns(2, [0.01], [2])
    assert [c.trial_number for c in rank_by_mean([lucky, steady, unconfirmed], False)] == [1, 0]
    assert [c.trial_number for c in rank_by_mean([lucky, steady, unconfirmed], True)] == [0, 1]
    tie = ConfigRuns(7, [0.12, 0.12, 0.13], [7, 8, 9])
    assert [c.trial_number for c in rank_by_mean([tie, steady], False)] == [1, 7]


def _insert(session: Any, study_id: int, number: int, value: float, **extra: Any) -> None:
    session.add(
        TrialRecord(
            study_id=study_id,
            number=number,
            slot=number,
            state=TrialState.complete.value,
            value=value,
            val_loss=value,
            epochs_run=1,
            claimed_at=utcnow(),
            **{"dropout": 0.1 * number, **extra},
        )
    )


def _running_study(
    session: Any, name: str, *, top_k: int, repeats: int, n_trials: int
) -> StudyRecord:
    """A running study with confirmation and no reference run, stored straight in SQL."""
    study = StudyRecord(
        name=name,
        trainer="synthetic-mlp",
        spec={"confirm": {"top_k": top_k, "repeats": repeats}, "reference": False},
        status="running",
        metric="val_loss",
        direction="minimize",
        n_trials=n_trials,
        n_extra=top_k * repeats,
    )
    session.add(study)
    session.flush()
    return study


def test_best_ranks_confirmed_configs_by_mean(migrated_db_url: str) -> None:
    """Trial 0 is the luckiest single run, trial 1 the better config on average: /best and the
    study's best (what the list shows) pick trial 1 with its mean; trial 0 stays beside it."""
    sessions = make_session_factory(make_engine(migrated_db_url))
    with unit_of_work(sessions) as session:
        study = _running_study(session, "ranked", top_k=2, repeats=2, n_trials=3)
        for number, value in enumerate([0.10, 0.12, 0.30]):
            _insert(session, study.id, number, value)
        confirm = TrialRole.confirm.value
        for number, (repeat_of, value) in enumerate(
            [(0, 0.20), (1, 0.12), (0, 0.22), (1, 0.13)], start=3
        ):
            _insert(session, study.id, number, value, role=confirm, repeat_of=repeat_of)
        worker_repo.refresh_study(session, study)
        assert study.status == "completed"
        assert study.best_trial_number == 1
        assert study.best_value == pytest.approx(0.37 / 3)
        assert (study.n_complete, study.n_extra_finished) == (3, 4)
        best = studies.best_result(session, study)
        detail = studies.study_detail(session, study)
    # the study page's best trial is the same config (before, the luckiest single run, 0)
    assert detail.best_trial is not None and detail.best_trial.number == 1

    assert best.trial_number == 1 and best.value == pytest.approx(0.37 / 3)
    assert best.params.dropout == pytest.approx(0.1)
    assert best.confirmation is not None
    assert best.confirmation.values == [0.12, 0.12, 0.13]
    assert best.confirmation.trial_numbers == [1, 4, 6]
    assert best.single_run is not None
    assert (best.single_run.trial_number, best.single_run.value) == (0, 0.10)
    assert best.reference is None


def test_tune_progress_lines_count_search_trials_and_label_extra_runs() -> None:
    tally = Tally()
    lines = []
    for trial in (
        {"number": 0, "state": "complete", "value": 0.5},
        {"number": 1, "state": "complete", "value": 0.4, "role": "reference"},
        {"number": 2, "state": "complete", "value": 0.3, "role": "confirm", "repeat_of": 0},
    ):
        tally.add(trial, "minimize")
        lines.append(trial_line(trial, tally, 1))
    assert lines == [
        "trial 0 complete value=0.5000 best=0.5000 [1/1]",
        "trial 1 (reference) complete value=0.4000 best=0.5000 [1/1]",
        "trial 2 (confirm of 0) complete value=0.3000 best=0.5000 [1/1]",
    ]


def test_the_progress_bar_counts_extra_runs_on_a_bar_of_their_own() -> None:
    """On a terminal the search bar was full and still while confirmation repeats trained."""
    bar = BarReporter()
    study: dict[str, Any] = {
        "metric": "val_loss",
        "direction": "minimize",
        "progress": {"n_trials": 1, "extra": 0, "extra_finished": 0},
    }
    bar.start(study, "study 1 'x' on a test")
    bar.trial({"number": 0, "state": "complete", "value": 0.5}, study)
    assert len(bar.progress.tasks) == 1  # no extra runs planned yet
    study["progress"] = {"n_trials": 1, "extra": 2, "extra_finished": 1}
    bar.trial({"number": 1, "state": "complete", "value": 0.4, "role": "confirm"}, study)
    bar.stop()
    search, extra = bar.progress.tasks
    assert (search.completed, search.total) == (1, 1)
    assert (extra.description, extra.completed, extra.total) == ("extra runs", 1, 2)


def test_confirmation_repeats_feasible_configs_once_each(migrated_db_url: str) -> None:
    """The configurations extra runs repeat: with constraints, an infeasible trial is never
    confirmed (nor so made the study's best) while a feasible one exists; a configuration
    sampled twice is repeated once, from its better run."""
    sessions = make_session_factory(make_engine(migrated_db_url))
    with unit_of_work(sessions) as session:
        study = _running_study(session, "feasible", top_k=3, repeats=1, n_trials=4)
        _insert(session, study.id, 0, 0.30, feasible=True)
        _insert(session, study.id, 1, 0.10, feasible=False)  # the best value breaks a bound
        _insert(session, study.id, 2, 0.20, feasible=True)
        _insert(session, study.id, 3, 0.25, feasible=True, dropout=0.2)  # trial 2's config
        ranked = worker_repo.ranked_search_runs(session, study)
        assert [r.number for r in ranked] == [2, 0]
        worker_repo.refresh_study(session, study)
        assert study.n_extra == 2  # top_k 3, but two feasible configurations

        # no feasible trial at all: the infeasible ones are all there is, best first
        for row in session.scalars(select(TrialRecord).where(TrialRecord.study_id == study.id)):
            row.feasible = False
        assert [r.number for r in worker_repo.ranked_search_runs(session, study)] == [1, 2, 0]
