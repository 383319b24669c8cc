"""An extra run (confirmation repeat) whose training fails."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
from pydantic import BaseModel
from sqlalchemy.exc import OperationalError
from typer.testing import CliRunner

from service.app import create_app
from service.cli import app as cli
from service.models import StudyRecord, StudyStatus, TrialRecord, TrialRole, TrialState
from service.studies.extras import confirm_seed
from service.studies.service import best_result
from service.worker import repository as worker_repo
from service.worker.trial import WorkerShutdown
from tests.support import TINY_CONFIG, serve_in_thread
from tests.worker.conftest import (
    Db,
    insert_study,
    register_trainer,
    run_workers_in_threads,
    settings_for,
    tiny_spec,
)
from trainers.builtin import SYNTHETIC_MLP
from trainers.registry import Trainer


class _Config(BaseModel):
    max_epochs: int = 3
    # seeds that train normally; any other diverges (or, interrupted-once, is interrupted once)
    seeds_that_train: list[int] = []


def _synthetic(params: Any, config: Any) -> tuple[Any, Any]:
    """The tiny synthetic-mlp, trained for `config.max_epochs`."""
    return SYNTHETIC_MLP.build(
        params, SYNTHETIC_MLP.validate_config({**TINY_CONFIG, "max_epochs": config.max_epochs})
    )


def _build(params: Any, config: Any) -> tuple[Any, Any]:
    diverges = torch.initial_seed() not in config.seeds_that_train  # regtune seeded torch
    module, data = _synthetic(params, config)
    if diverges:
        forward = module.backbone.forward
        module.backbone.forward = lambda x: forward(x) * float("nan")
    return module, data


REPEATS_DIVERGE = Trainer(
    name="repeats-diverge",
    description="trains on the given seeds, diverges on any other (tests only)",
    config_model=_Config,
    build=_build,
)


@pytest.fixture
def repeats_diverge(monkeypatch: pytest.MonkeyPatch) -> Trainer:
    return register_trainer(monkeypatch, REPEATS_DIVERGE)


def _seeds_that_train(n_trials: int) -> list[int]:
    """The training seeds of search trials 0..n-1 (`trainers.objective.train_seed_for`)."""
    return [int(np.random.SeedSequence([0, n]).generate_state(1)[0]) for n in range(n_trials)]


@pytest.mark.parametrize("race", [False, True])
def test_a_failed_confirmation_repeat_is_its_result_and_the_study_completes(
    migrated_db_url: str, repeats_diverge: Trainer, race: bool
) -> None:
    """Every config's repeats 0 and 2 diverge, repeat 1 trains: each failed repeat runs once
    (the same seed would diverge again) instead of being re-run until the study fails, a race
    still moves on to its next round, and /best ranks the winner by its finite runs and lists
    the failed ones."""
    search = _seeds_that_train(2)
    trains = [*search, *(confirm_seed(seed, 1) for seed in search)]
    spec = tiny_spec(
        name="diverge",
        n_trials=2,
        trainer="repeats-diverge",
        trainer_config={"max_epochs": 3, "seeds_that_train": trains},
        confirm={"top_k": 2, "repeats": 3, "race": race},
    )
    study_id = insert_study(migrated_db_url, spec)
    run_workers_in_threads(settings_for(migrated_db_url), 1)

    db = Db(migrated_db_url)
    study = db.study(study_id)
    confirms = [t for t in db.trials(study_id) if t.role == TrialRole.confirm]
    assert study.status == StudyStatus.completed, study.error
    assert study.n_extra == study.n_extra_finished == len(confirms)
    # a race decides after round 1 (two finite runs a side) and may drop a config's last repeat
    assert len(confirms) == 6 if not race else len(confirms) in (5, 6)
    assert len({t.train_seed for t in confirms}) == len(confirms)  # no repeat ran twice
    failed = sorted(t.number or 0 for t in confirms if t.state == TrialState.fail)
    assert len(failed) == len(confirms) - 2  # every repeat 0 and 2 that ran
    assert all("diverged" in (t.error or "") for t in confirms if t.state == TrialState.fail)

    best = db.execute(lambda s: best_result(s, s.get(StudyRecord, study_id)))
    confirmation = best.confirmation
    assert confirmation is not None
    assert confirmation.n == len(confirmation.values) == 2  # the search run and repeat 1
    assert all(math.isfinite(v) for v in confirmation.values)
    assert set(confirmation.failed) < set(failed) and len(confirmation.failed) == 2

    # `regtune best` says so beside the interval
    with serve_in_thread(create_app(settings_for(migrated_db_url))) as server:
        shown = CliRunner().invoke(cli, ["best", str(study_id), "--server", server])
    assert shown.exit_code == 0, shown.output
    assert "; 2 failed (trials " in shown.stdout and "), not in the mean" in shown.stdout


def test_a_database_error_in_a_confirmation_repeat_gives_its_slot_back(
    migrated_db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only the training's own failure is a repeat's result: a database error around it (here
    `database is locked` once, when the first repeat records its parameters) leaves the slot
    to be claimed again, and the repeat then trains with its seed."""
    real, raised = worker_repo.set_params, list[int]()

    def flaky(session: Any, trial_id: int, params: dict[str, Any]) -> None:
        row = session.get(TrialRecord, trial_id)
        if row is not None and row.role == TrialRole.confirm.value and not raised:
            raised.append(trial_id)
            raise OperationalError("UPDATE regtune_trials", {}, Exception("database is locked"))
        real(session, trial_id, params)

    monkeypatch.setattr(worker_repo, "set_params", flaky)
    spec = tiny_spec(name="flaky", n_trials=2, confirm={"top_k": 1, "repeats": 2})
    study_id = insert_study(migrated_db_url, spec)
    run_workers_in_threads(settings_for(migrated_db_url), 1)

    db = Db(migrated_db_url)
    study = db.study(study_id)
    confirms = [t for t in db.trials(study_id) if t.role == TrialRole.confirm]
    assert raised and study.status == StudyStatus.completed, study.error
    done = [t for t in confirms if t.state == TrialState.complete]
    assert (study.n_extra_finished, len(done)) == (2, 2)
    (given_back,) = [t for t in confirms if t.state == TrialState.fail]
    assert given_back.slot is None and "database is locked" in (given_back.error or "")
    assert given_back.train_seed in {t.train_seed for t in done}  # tried again with its seed
    best = db.execute(lambda s: best_result(s, s.get(StudyRecord, study_id)))
    assert best.confirmation is not None
    assert (best.confirmation.n, best.confirmation.failed) == (3, [])


_interrupted: list[int] = []


def _build_interrupted_once(params: Any, config: Any) -> tuple[Any, Any]:
    seed = torch.initial_seed()
    if seed not in config.seeds_that_train and seed not in _interrupted:
        _interrupted.append(seed)
        # what the worker's signal handler raises inside training on a second SIGTERM/Ctrl-C
        raise WorkerShutdown("abandoned: the worker was asked to shut down twice")
    return _synthetic(params, config)


def test_a_confirmation_repeat_abandoned_by_a_shutdown_is_run_again(
    migrated_db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second signal abandons the running repeat at once: that is the worker's shutdown, not
    the repeat's result. Before, it was recorded failed keeping its slot (never run again; the
    study completed with the repeat missing); now the slot is given back and it trains."""
    register_trainer(
        monkeypatch,
        Trainer(
            name="interrupted-once",
            description="the first build of an unlisted seed is interrupted (tests only)",
            config_model=_Config,
            build=_build_interrupted_once,
        ),
    )
    _interrupted.clear()
    spec = tiny_spec(
        name="twice",
        n_trials=1,
        trainer="interrupted-once",
        trainer_config={"max_epochs": 3, "seeds_that_train": _seeds_that_train(1)},
        confirm={"top_k": 1, "repeats": 1},
    )
    study_id = insert_study(migrated_db_url, spec)
    run_workers_in_threads(settings_for(migrated_db_url), 1)

    db = Db(migrated_db_url)
    study = db.study(study_id)
    confirms = [t for t in db.trials(study_id) if t.role == TrialRole.confirm]
    assert len(_interrupted) == 1 and study.status == StudyStatus.completed, study.error
    (abandoned,) = [t for t in confirms if t.state == TrialState.fail]
    assert abandoned.slot is None and "shut down twice" in (abandoned.error or "")
    (done,) = [t for t in confirms if t.state == TrialState.complete]
    assert done.train_seed == abandoned.train_seed
    assert (study.n_extra, study.n_extra_finished, study.consecutive_failures) == (1, 1, 0)
