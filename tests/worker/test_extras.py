"""Extra runs beyond the search budget: the reference run (regularization off) and confirmation
repeats, claimed by workers like trials, counted apart from n_trials, retried after a crash."""

from __future__ import annotations

from datetime import timedelta

import optuna
import pytest
from sqlalchemy import text

from service.db import unit_of_work
from service.models import StudyRecord, StudyStatus, TrialRole, TrialState, utcnow
from service.spec import StudySpec
from service.studies.extras import REPEAT_OF_ATTR, ROLE_ATTR, SLOT_ATTR, ExtraRun
from service.studies.service import best_result
from service.worker import WorkerOptions, run_worker
from service.worker import repository as repo
from service.worker import stale as sweep_module
from service.worker.optimization import open_extra_study, open_storage
from tests.support import sweep_once
from tests.worker.conftest import Db, insert_study, run_workers_in_threads, settings_for, tiny_spec

IDLE = WorkerOptions(exit_when_idle=True)


def test_reference_run_trains_the_best_config_with_regularization_off(
    migrated_db_url: str,
) -> None:
    spec = tiny_spec(name="ref", n_trials=3, reference=True)
    study_id = insert_study(migrated_db_url, spec)

    ran = run_worker(settings_for(migrated_db_url), IDLE, handle_signals=False)

    db = Db(migrated_db_url)
    study = db.study(study_id)
    trials = db.trials(study_id)
    assert ran == 4
    assert study.status == StudyStatus.completed
    # n_trials counts the search alone; the reference run is the one extra
    assert (study.n_complete, study.n_extra, study.n_extra_finished) == (3, 1, 1)
    search = [t for t in trials if t.role == TrialRole.search]
    (reference,) = [t for t in trials if t.role == TrialRole.reference]
    assert len(search) == 3
    assert reference.state == TrialState.complete and reference.slot == 3
    assert reference.number == 3  # after every search trial
    best = min(search, key=lambda t: t.value)  # type: ignore[arg-type, return-value]
    assert (study.best_trial_number, study.best_value) == (best.number, best.value)
    assert (reference.weight_decay, reference.l1, reference.dropout) == (0.0, 0.0, 0.0)
    assert reference.label_smoothing == 0.0
    # no early stopping: patience is the study's max_epochs, every epoch runs and the run
    # reports the epoch training ended with, not its best one
    epochs = spec["trainer_config"]["max_epochs"]
    assert reference.patience == epochs
    assert reference.epochs_run == epochs and reference.best_epoch == epochs - 1
    assert reference.batch_size == best.batch_size
    assert reference.value is not None

    frozen = optuna.load_study(study_name="ref", storage=migrated_db_url).trials[3]
    assert frozen.user_attrs[ROLE_ATTR] == "reference"
    assert frozen.params == {}  # nothing sampled: the sampler never sees it as a point


def test_reference_off_runs_exactly_n_trials(migrated_db_url: str) -> None:
    study_id = insert_study(migrated_db_url, tiny_spec(name="noref", n_trials=2))
    assert run_worker(settings_for(migrated_db_url), IDLE, handle_signals=False) == 2
    assert Db(migrated_db_url).study(study_id).n_extra == 0


def test_confirmation_runs_claimed_by_two_workers_are_counted_exactly(
    migrated_db_url: str,
) -> None:
    spec = tiny_spec(name="conf", n_trials=4, confirm={"top_k": 2, "repeats": 2})
    study_id = insert_study(migrated_db_url, spec)
    settings = settings_for(migrated_db_url)
    counts = run_workers_in_threads(settings, 2)

    db = Db(migrated_db_url)
    study = db.study(study_id)
    trials = db.trials(study_id)
    assert sum(counts) == 8
    assert study.status == StudyStatus.completed
    assert (study.n_trials, study.n_complete, study.n_extra, study.n_extra_finished) == (4, 4, 4, 4)
    search = sorted((t for t in trials if t.role == TrialRole.search), key=lambda t: t.value)  # type: ignore[arg-type, return-value]
    confirms = [t for t in trials if t.role == TrialRole.confirm]
    assert len(search) == 4 and len(confirms) == 4
    assert all(t.state == TrialState.complete for t in trials)
    top2 = {search[0].number, search[1].number}
    assert sorted(c.repeat_of for c in confirms) == sorted([*top2, *top2])  # type: ignore[type-var]
    by_number = {t.number: t for t in trials}
    for confirm in confirms:
        original = by_number[confirm.repeat_of]
        assert (confirm.dropout, confirm.weight_decay) == (original.dropout, original.weight_decay)
        assert confirm.train_seed is not None
    # two repeats of one config never share a seed
    assert len({(c.repeat_of, c.train_seed) for c in confirms}) == 4

    optuna_trials = optuna.load_study(study_name="conf", storage=migrated_db_url).trials
    assert len(optuna_trials) == 8
    for confirm in confirms:
        frozen = optuna_trials[confirm.number]  # type: ignore[index]
        assert frozen.user_attrs[ROLE_ATTR] == "confirm"
        assert frozen.user_attrs[REPEAT_OF_ATTR] == confirm.repeat_of
        assert frozen.user_attrs["train_seed"] == confirm.train_seed
        assert frozen.params == optuna_trials[confirm.repeat_of].params  # type: ignore[index]


def _die_in_an_extra_run(
    db: Db, storage: optuna.storages.RDBStorage, study_id: int, spec: StudySpec
) -> tuple[int, ExtraRun]:
    """What a worker does with an extra run up to the moment it is SIGKILLed: claim the slot,
    start the trial (Optuna's waiting retry of it, if any), bind it, beat once, an hour ago.
    Returns the claim's row id and its run."""
    with unit_of_work(db.sessions) as session:
        study_row = repo.lock_study(session, study_id)
        assert study_row is not None
        row = repo.claim_slot(session, study_row, "dead-worker")
        assert row is not None and row.role != TrialRole.search
        claim_id, slot, extra = row.id, row.slot, repo.extra_run(row)
    assert extra is not None and slot is not None
    trial = open_extra_study(storage, spec, extra, slot).ask()
    with unit_of_work(db.sessions) as session:
        assert repo.bind_trial(session, claim_id, trial.number, trial._trial_id, None)
    storage.record_heartbeat(trial._trial_id)
    old = utcnow() - timedelta(hours=1)
    db.execute(lambda s: s.execute(text("UPDATE trial_heartbeats SET heartbeat = :t"), {"t": old}))
    return claim_id, extra


def test_a_crashed_confirmation_run_is_retried_with_its_seed(
    migrated_db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker dies mid-way through a confirm run: the sweep frees its slot, the next worker
    runs Optuna's retry of that very run (same config, seed and repeat_of), and the study
    completes with exact counts."""
    monkeypatch.setattr(sweep_module, "SETTLE_S", 0.0)
    spec = tiny_spec(name="crash", n_trials=2, confirm={"top_k": 1, "repeats": 1})
    study_id = insert_study(migrated_db_url, spec)
    settings = settings_for(migrated_db_url)
    assert run_worker(settings, WorkerOptions(max_trials=2), handle_signals=False) == 2

    db = Db(migrated_db_url)
    storage = open_storage(migrated_db_url, settings)
    claim_id, extra = _die_in_an_extra_run(db, storage, study_id, StudySpec.model_validate(spec))

    assert sweep_once(migrated_db_url, settings) == 1
    dead = next(t for t in db.trials(study_id) if t.id == claim_id)
    assert dead.state == TrialState.fail and dead.slot is None
    assert db.study(study_id).status == StudyStatus.running  # not complete without the repeat

    assert run_worker(settings, IDLE, handle_signals=False) == 1
    study = db.study(study_id)
    trials = db.trials(study_id)
    retry = trials[-1]
    assert retry.state == TrialState.complete and retry.slot == 2
    assert retry.role == TrialRole.confirm and retry.retry_of == dead.number
    assert (retry.repeat_of, retry.train_seed) == (extra.repeat_of, extra.train_seed)
    assert study.status == StudyStatus.completed
    assert (study.n_complete, study.n_failed, study.n_extra, study.n_extra_finished) == (2, 0, 1, 1)
    frozen = optuna.load_study(study_name="crash", storage=migrated_db_url).trials
    assert frozen[retry.number].user_attrs[SLOT_ATTR] == 2  # type: ignore[index]
    storage.engine.dispose()


def test_an_extra_run_whose_worker_keeps_dying_is_failed_after_its_retries(
    migrated_db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A confirm run kills its worker every time (say, killed for memory): with
    REGTUNE_MAX_RETRIES=1 it runs twice, is then recorded failed, keeping its slot, and the
    study completes after the other repeat; before, its slot was given back after the last
    retry and the same config and seed started over without end."""
    monkeypatch.setattr(sweep_module, "SETTLE_S", 0.0)
    spec = tiny_spec(name="oom", n_trials=2, confirm={"top_k": 1, "repeats": 2})
    study_id = insert_study(migrated_db_url, spec)
    settings = settings_for(migrated_db_url, max_retries=1)
    assert run_worker(settings, WorkerOptions(max_trials=2), handle_signals=False) == 2
    db = Db(migrated_db_url)
    storage = open_storage(migrated_db_url, settings)
    parsed = StudySpec.model_validate(spec)

    first, run = _die_in_an_extra_run(db, storage, study_id, parsed)
    assert sweep_once(migrated_db_url, settings) == 1
    dead = next(t for t in db.trials(study_id) if t.id == first)
    assert dead.slot is None  # given back, to be retried
    first_number = dead.number
    second, retried = _die_in_an_extra_run(db, storage, study_id, parsed)
    assert retried.train_seed == run.train_seed
    assert sweep_once(migrated_db_url, settings) == 1

    study = db.study(study_id)
    last = next(t for t in db.trials(study_id) if t.id == second)
    assert last.state == TrialState.fail and last.slot == 2
    frozen = optuna.load_study(study_name="oom", storage=migrated_db_url).trials
    assert frozen[last.number].system_attrs["retry_history"] == [first_number]  # type: ignore[index]
    assert "2 time(s) in a row; not retried again" in (last.error or "")
    assert (study.n_extra, study.n_extra_finished) == (2, 1)
    assert run_worker(settings, IDLE, handle_signals=False) == 1  # the other repeat, only
    study = db.study(study_id)
    assert study.status == StudyStatus.completed, study.error
    assert (study.n_extra, study.n_extra_finished) == (2, 2)
    best = db.execute(lambda s: best_result(s, s.get(StudyRecord, study_id)))
    assert best.confirmation is not None
    assert (best.confirmation.n, best.confirmation.failed) == (2, [last.number])
    storage.engine.dispose()


def test_extra_slots_open_only_once_the_search_has_finished(migrated_db_url: str) -> None:
    study_id = insert_study(migrated_db_url, tiny_spec(name="wait", n_trials=1, reference=True))
    db = Db(migrated_db_url)
    with unit_of_work(db.sessions) as session:
        study = repo.lock_study(session, study_id)
        assert study is not None
        search = repo.claim_slot(session, study, "w")
        assert search is not None and search.role == TrialRole.search
        search.number, search.batch_size = 0, 32
    with unit_of_work(db.sessions) as session:
        # the search trial still runs: nobody is handed (or even locks) the study
        assert repo.candidate_studies(session) == []
        study = repo.lock_study(session, study_id)
        assert study is not None
        assert repo.claim_slot(session, study, "w2") is None
        result = repo.TrialResult(TrialState.complete, value=0.5, train_seed=11)
        repo.finish_trial(session, study, search.id, result)
        repo.refresh_study(session, study)
        assert study.status == StudyStatus.running  # the reference run is still to come
    with unit_of_work(db.sessions) as session:
        assert repo.candidate_studies(session) == [study_id]
        study = repo.lock_study(session, study_id)
        assert study is not None
        reference = repo.claim_slot(session, study, "w2")
        assert reference is not None and reference.role == TrialRole.reference
        assert (reference.slot, reference.train_seed, reference.batch_size) == (1, 11, 32)
        assert repo.claim_slot(session, study, "w3") is None  # one reference run only
