"""Workers on real databases (SQLite file and PostgreSQL) with real tiny Lightning trainings."""

from __future__ import annotations

import logging
import threading
from collections import Counter
from datetime import timedelta
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState as OptunaState
from sqlalchemy import event, text, update

from service.models import StudyRecord, StudyStatus, TrialState, utcnow
from service.worker import WorkerOptions, run_worker
from service.worker import stale as sweep_module
from service.worker.optimization import open_storage
from service.worker.trial import WorkerContext
from tests.support import sweep_once
from tests.worker.conftest import (
    Db,
    insert_study,
    settings_for,
    tiny_spec,
    wait_for,
)

IDLE = WorkerOptions(exit_when_idle=True)


def test_study_runs_to_completed_with_exactly_n_trials(migrated_db_url: str) -> None:
    study_id = insert_study(migrated_db_url, tiny_spec(n_trials=3))

    ran = run_worker(settings_for(migrated_db_url), IDLE, handle_signals=False)

    db = Db(migrated_db_url)
    study = db.study(study_id)
    trials = db.trials(study_id)
    assert ran == 3
    assert study.status == StudyStatus.completed
    assert study.n_complete + study.n_pruned == 3
    assert study.n_running == 0 and study.n_failed == 0
    assert sorted(t.slot for t in trials if t.slot is not None) == [0, 1, 2]
    assert sorted(t.number for t in trials if t.number is not None) == [0, 1, 2]
    for trial in trials:
        assert trial.state == TrialState.complete
        assert trial.dropout is not None and 0.0 <= trial.dropout <= 0.5
        assert trial.patience == 10
        assert trial.epochs_run >= 1
        assert [e.epoch for e in db.epochs(trial.id)] == list(range(trial.epochs_run))
        assert trial.value == trial.metrics["val_loss"]  # type: ignore[index]
    best = min(trials, key=lambda t: t.value)  # type: ignore[arg-type, return-value]
    assert (study.best_trial_number, study.best_value) == (best.number, best.value)


def test_a_study_stored_before_a_new_submit_rule_still_runs(migrated_db_url: str) -> None:
    """Submit now refuses a step that does not divide its range; a study accepted before that
    rule (queued across the upgrade) is run as it was, not failed by the worker."""
    spec = tiny_spec(name="legacy", n_trials=1)
    spec["search_space"]["dropout"] = {"low": 0.0, "high": 0.5, "step": 0.1}
    study_id = insert_study(migrated_db_url, spec)
    db = Db(migrated_db_url)
    legacy = {**spec, "search_space": {**spec["search_space"]}}
    legacy["search_space"]["dropout"] = {"low": 0.0, "high": 0.5, "step": 0.2}
    db.execute(
        lambda s: s.execute(update(StudyRecord).where(StudyRecord.id == study_id).values(
            spec={**s.get(StudyRecord, study_id).spec, "search_space": legacy["search_space"]}
        ))
    )  # fmt: skip
    assert run_worker(settings_for(migrated_db_url), IDLE, handle_signals=False) == 1
    study = db.study(study_id)
    assert study.status == StudyStatus.completed, study.error
    (trial,) = db.trials(study_id)
    assert trial.dropout in (0.0, 0.2, 0.4)  # Optuna's grid, as before the rule


def test_optuna_load_study_sees_the_same_trials(migrated_db_url: str) -> None:
    study_id = insert_study(migrated_db_url, tiny_spec(name="compat", n_trials=2))
    run_worker(settings_for(migrated_db_url), IDLE, handle_signals=False)

    study = optuna.load_study(study_name="compat", storage=migrated_db_url)
    ours = {t.number: t for t in Db(migrated_db_url).trials(study_id)}
    assert {t.number for t in study.trials} == set(ours)
    for trial in study.trials:
        row = ours[trial.number]
        assert trial.state == OptunaState.COMPLETE
        assert trial.value == pytest.approx(row.value)
        assert trial.params["dropout"] == pytest.approx(row.dropout)
        assert trial.intermediate_values  # one report per epoch, what the pruner saw


def test_failing_trial_is_recorded_and_the_worker_carries_on(
    migrated_db_url: str, failing_trainer: object
) -> None:
    spec = tiny_spec(name="flaky", n_trials=2, trainer="failing", trainer_config={"fail_first": 1})
    study_id = insert_study(migrated_db_url, spec)

    run_worker(settings_for(migrated_db_url), IDLE, handle_signals=False)

    db = Db(migrated_db_url)
    trials = db.trials(study_id)
    failed = [t for t in trials if t.state == TrialState.fail]
    assert len(failed) == 1
    assert failed[0].error == "RuntimeError: boom #1"  # one line, no traceback
    assert failed[0].slot is None  # released: the budget is met by finished trials
    complete = [t.slot for t in trials if t.state == TrialState.complete]
    assert sorted(s for s in complete if s is not None) == [0, 1] and len(complete) == 2
    study = db.study(study_id)
    assert study.status == StudyStatus.completed
    assert (study.n_complete, study.n_failed) == (2, 1)
    frozen = optuna.load_study(study_name="flaky", storage=migrated_db_url).trials
    assert [t.state for t in frozen].count(OptunaState.FAIL) == 1


def test_consecutive_failures_end_the_study_failed(
    migrated_db_url: str, failing_trainer: object
) -> None:
    spec = tiny_spec(name="broken", n_trials=5, trainer="failing", trainer_config={})
    study_id = insert_study(migrated_db_url, spec)

    settings = settings_for(migrated_db_url, max_consecutive_failures=2)
    run_worker(settings, IDLE, handle_signals=False)

    db = Db(migrated_db_url)
    study = db.study(study_id)
    assert study.status == StudyStatus.failed
    assert study.error is not None
    assert "2 trials failed in a row" in study.error and "RuntimeError: boom #2" in study.error
    assert [t.state for t in db.trials(study_id)] == [TrialState.fail, TrialState.fail]


def test_cancel_stops_the_running_trial_at_its_next_epoch(migrated_db_url: str) -> None:
    # long enough that the cancel lands mid-trial: many epochs, no early stopping
    spec = tiny_spec(name="to-cancel", n_trials=3)
    spec["trainer_config"]["max_epochs"] = 5000
    spec["search_space"]["patience"] = {"fixed": 5000}
    study_id = insert_study(migrated_db_url, spec)
    db = Db(migrated_db_url)
    worker = threading.Thread(
        target=run_worker,
        args=(settings_for(migrated_db_url), IDLE),
        kwargs={"handle_signals": False},
    )
    worker.start()
    try:
        wait_for(
            lambda: any(t.epochs_run >= 2 for t in db.trials(study_id)), what="a running trial"
        )
        db.execute(
            lambda s: s.execute(
                update(StudyRecord)
                .where(StudyRecord.id == study_id)
                .values(status=StudyStatus.cancelled.value)
            )
        )
    finally:
        worker.join(120)
    assert not worker.is_alive()
    trials = db.trials(study_id)
    assert len(trials) == 1  # no new trial after the cancel
    assert trials[0].state == TrialState.cancelled
    assert 2 <= trials[0].epochs_run < 5000
    assert db.study(study_id).status == StudyStatus.cancelled
    frozen = optuna.load_study(study_name="to-cancel", storage=migrated_db_url).trials
    assert [t.state for t in frozen] == [OptunaState.PRUNED]


def test_sweep_fails_a_dead_workers_trial_and_the_retry_keeps_its_params(
    migrated_db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker that died mid-trial: the heartbeat goes stale, the sweep frees the slot."""
    monkeypatch.setattr(sweep_module, "SETTLE_S", 0.0)
    settings = settings_for(migrated_db_url)
    study_id = insert_study(migrated_db_url, tiny_spec(name="orphan", n_trials=1))
    # what a worker does up to the moment it is SIGKILLed: claim, ask, bind, heartbeat
    from service.db import unit_of_work
    from service.spec import StudySpec
    from service.worker import repository as repo
    from service.worker.optimization import open_study

    db = Db(migrated_db_url)
    with unit_of_work(db.sessions) as session:
        study_row = repo.lock_study(session, study_id)
        assert study_row is not None
        claim = repo.claim_slot(session, study_row, "dead-worker")
        assert claim is not None
        claim_id = claim.id
    storage = open_storage(migrated_db_url, settings)
    spec = StudySpec.model_validate(tiny_spec(name="orphan", n_trials=1))
    trial = open_study(storage, spec, claim_id).ask()
    dropout = trial.suggest_float("dropout", 0.0, 0.5)
    with unit_of_work(db.sessions) as session:
        assert repo.bind_trial(session, claim_id, trial.number, trial._trial_id, None)
    storage.record_heartbeat(trial._trial_id)
    old = utcnow() - timedelta(hours=1)
    db.execute(lambda s: s.execute(text("UPDATE trial_heartbeats SET heartbeat = :t"), {"t": old}))

    assert sweep_once(migrated_db_url, settings) == 1

    (dead,) = db.trials(study_id)
    assert dead.state == TrialState.fail and dead.slot is None
    assert dead.error is not None and "no heartbeat" in dead.error
    # the next worker runs the retry (same parameters) and the study completes
    run_worker(settings, IDLE, handle_signals=False)
    trials = db.trials(study_id)
    assert len(trials) == 2
    retry = trials[1]
    assert retry.state == TrialState.complete and retry.slot == 0
    assert retry.retry_of == dead.number
    assert retry.dropout == pytest.approx(dropout)
    assert db.study(study_id).status == StudyStatus.completed


def test_sweep_gives_back_a_slot_claimed_by_a_worker_that_died(migrated_db_url: str) -> None:
    from service.db import unit_of_work
    from service.worker import repository as repo

    study_id = insert_study(migrated_db_url, tiny_spec(name="lost-claim", n_trials=1))
    db = Db(migrated_db_url)
    with unit_of_work(db.sessions) as session:
        study_row = repo.lock_study(session, study_id)
        assert study_row is not None
        claim = repo.claim_slot(session, study_row, "dead-worker")
        assert claim is not None
        claim.claimed_at = utcnow() - timedelta(hours=1)

    sweep_once(migrated_db_url, settings_for(migrated_db_url))

    assert db.trials(study_id) == []
    with unit_of_work(db.sessions) as session:
        assert repo.candidate_studies(session) == [study_id]


def test_trainer_plugins_load_before_the_first_claim(
    migrated_db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A claim validates the spec (which loads the trainer plugins: torch, Lightning) while it
    holds the study's row lock; loading them there made workers started together import one
    after the other. The worker loads them first."""
    from service.worker import loop
    from trainers import registry

    insert_study(migrated_db_url, tiny_spec(n_trials=1))
    monkeypatch.setattr(registry, "_cache", None)
    loaded_at_claim: list[bool] = []
    real_claim = loop.claim_next

    def claim(*args: object, **kwargs: object) -> object:
        loaded_at_claim.append(registry._cache is not None)
        return real_claim(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(loop, "claim_next", claim)
    assert run_worker(settings_for(migrated_db_url), IDLE, handle_signals=False) == 1
    assert loaded_at_claim and all(loaded_at_claim)


def _count_finished_trial_loads(ctx: WorkerContext, loads: Counter[tuple[int, int]]) -> None:
    """Count every finished Optuna trial row the worker's storage loads from the database, by
    (Optuna study id, trial number): SQLAlchemy's session event, no Optuna internals."""

    def on_load(_session: object, row: Any) -> None:
        if getattr(row, "__tablename__", None) == "trials" and row.state.is_finished():
            loads[(row.study_id, row.number)] += 1

    event.listen(ctx.storage.scoped_session, "loaded_as_persistent", on_load)


def test_a_worker_reads_each_finished_trial_into_its_cache_once(
    migrated_db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker keeps Optuna's read cache for its whole life: before each trial Optuna reads
    only trials that are new or still running, not the whole study again (which made every
    trial of a long study slower than the last). A finished trial is loaded twice at most: when
    its worker records its final state, and once into the cache."""
    from service.worker import loop

    n_trials = 5
    insert_study(migrated_db_url, tiny_spec(n_trials=n_trials))
    loads: Counter[tuple[int, int]] = Counter()
    real_make_context = loop.make_context

    def make_context(*args: Any, **kwargs: Any) -> WorkerContext:
        ctx = real_make_context(*args, **kwargs)
        _count_finished_trial_loads(ctx, loads)
        return ctx

    monkeypatch.setattr(loop, "make_context", make_context)
    assert run_worker(settings_for(migrated_db_url), IDLE, handle_signals=False) == n_trials
    # re-reading the whole study before every trial loaded trial 0 n_trials times
    assert sorted(number for _, number in loads) == list(range(n_trials))
    assert max(loads.values()) <= 2


def test_a_long_lived_worker_keeps_only_its_most_recent_studies_in_memory(
    migrated_db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Optuna's read cache holds every trial of a study; a worker that serves study after study
    keeps it only for the studies it used last, and still reads each finished trial of a study
    into the cache once while it works on that study."""
    from service.worker import loop

    ids = [insert_study(migrated_db_url, tiny_spec(f"s{k}", n_trials=3)) for k in range(3)]
    contexts: list[WorkerContext] = []
    loads: Counter[tuple[int, int]] = Counter()
    real_make_context = loop.make_context

    def make_context(*args: Any, **kwargs: Any) -> WorkerContext:
        ctx = real_make_context(*args, **kwargs)
        ctx.max_study_caches = 2
        _count_finished_trial_loads(ctx, loads)
        contexts.append(ctx)
        return ctx

    monkeypatch.setattr(loop, "make_context", make_context)
    assert run_worker(settings_for(migrated_db_url), IDLE, handle_signals=False) == 9
    storage = open_storage(migrated_db_url, settings_for(migrated_db_url))
    optuna_ids = [storage.get_study_id_from_name(f"s{k}") for k in range(3)]
    assert contexts[0].cached_studies() == ids[1:]
    for optuna_id in optuna_ids:
        assert sorted(n for s, n in loads if s == optuna_id) == [0, 1, 2]
    assert max(loads.values()) <= 2


def test_optuna_logs_no_traceback_for_a_trial_the_worker_abandoned() -> None:
    """Ctrl-C during a trial: the worker says so in one line; Optuna's 'Trial N failed ...'
    record with the WorkerShutdown traceback is dropped, a real failure's is kept."""
    from service.worker.trial import SlotLost, WorkerShutdown, quiet_abandoned_trials

    class Keep(logging.Handler):
        def __init__(self) -> None:
            super().__init__()
            self.errors: list[str] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.errors.append(str(record.exc_info[1]) if record.exc_info else "")

    handler = Keep()
    logger = logging.getLogger("optuna.study._optimize")
    logger.addHandler(handler)
    try:
        quiet_abandoned_trials()
        quiet_abandoned_trials()  # installed once
        for exc in (WorkerShutdown("abandoned"), SlotLost("swept"), RuntimeError("boom")):
            logger.warning("Trial 3 failed", exc_info=(type(exc), exc, None))
    finally:
        logger.removeHandler(handler)
    assert handler.errors == ["boom"]
