"""Racing the confirmation (`confirm.race`): repeats round by round, and a configuration
clearly behind the leader (one-sided Welch test at 0.05) is not re-trained again."""

from __future__ import annotations

from typing import Any

import pytest

from service.models import StudyStatus, TrialRole, TrialState
from service.studies.confirmation import ConfigRuns, race_survivors
from service.studies.extras import SearchRun, confirm_seed, plan_extras
from tests.worker.conftest import Db, insert_study, run_workers_in_threads, settings_for, tiny_spec
from trainers.space import SearchSpace

SPACE = SearchSpace()


def _numbers(configs: list[ConfigRuns]) -> list[int]:
    return [c.trial_number for c in configs]


def test_race_keeps_the_leader_and_what_the_test_cannot_tell_apart() -> None:
    leader = ConfigRuns(0, [0.50, 0.51, 0.49])
    close = ConfigRuns(1, [0.52, 0.49, 0.53])  # worse mean, within the noise
    behind = ConfigRuns(2, [0.70, 0.71, 0.69])
    one_run = ConfigRuns(3, [0.90])  # cannot be tested yet
    diverged = ConfigRuns(4, [float("nan"), float("inf")])
    kept = race_survivors([behind, leader, close, one_run, diverged], maximize=False)
    assert _numbers(kept) == [0, 1, 3]
    # maximizing, the same numbers make config 2 the leader and drop the rest that it beats
    assert _numbers(race_survivors([behind, leader, close], maximize=True)) == [2]
    # at a far stricter level the test no longer tells even these apart (p is about 1e-5)
    assert _numbers(race_survivors([leader, behind], maximize=False, alpha=1e-9)) == [0, 2]


def _ranked() -> list[SearchRun]:
    return [
        SearchRun(number=n, value=v, params={"dropout": n / 10}, train_seed=100 + n)
        for n, v in [(3, 0.50), (1, 0.52), (0, 0.60), (2, 0.90)]
    ]


def _spec(race: bool) -> dict[str, Any]:
    return {
        "trainer": "synthetic-mlp",
        "reference": False,
        "confirm": {"top_k": 3, "repeats": 3, "race": race},
    }


def _repeated(plan: list[Any]) -> list[tuple[int, int]]:
    return [(run.repeat_of, run.train_seed) for run in plan]


def test_a_race_plans_the_next_round_only_once_the_last_has_finished() -> None:
    ranked = _ranked()
    first_round = [(n, confirm_seed(100 + n, 0)) for n in (3, 1, 0)]
    plain = plan_extras(_spec(False), ranked, SPACE)
    assert (len(plain.runs), plain.total) == (9, 9)
    assert _repeated(plain.runs[:3]) == first_round

    waiting = plan_extras(_spec(True), ranked, SPACE, {3: [0.51], 1: [0.53]})
    # round 0 is decided; config 0's repeat has not finished, so round 1 is not planned yet
    assert _repeated(waiting.runs) == first_round
    assert waiting.total == 9

    # round 0 done: config 0 (0.60, 0.61) is clearly behind 3 (0.50, 0.51); 1 is not
    after = plan_extras(_spec(True), ranked, SPACE, {3: [0.51], 1: [0.50], 0: [0.61]})
    assert _repeated(after.runs) == [
        *first_round,
        (3, confirm_seed(103, 1)),
        (1, confirm_seed(101, 1)),
    ]
    assert after.total == 3 + 2 + 2

    # the last round is planned without waiting for anything after it
    done = {3: [0.51, 0.49], 1: [0.50, 0.52], 0: [0.61]}
    last = plan_extras(_spec(True), ranked, SPACE, done)
    assert len(last.runs) == last.total == 7
    # without racing, results change nothing
    assert _repeated(plan_extras(_spec(False), ranked, SPACE, done).runs) == _repeated(plain.runs)


@pytest.mark.parametrize("race", [True, False])
def test_a_raced_confirmation_with_two_workers_skips_the_config_left_behind(
    migrated_db_url: str, race: bool
) -> None:
    """Two warm-start configs, one far worse (dropout 0.9, weight decay 0.5, label smoothing
    0.5): after one repeat each the race drops it and only the leader gets repeats 2 and 3;
    the counts stay exact with two workers claiming."""
    space = {
        "dropout": {"low": 0.0, "high": 0.9},
        "weight_decay": {"low": 1e-6, "high": 0.5, "log": True},
        "label_smoothing": {"low": 0.0, "high": 0.5},
        "batch_size": {"fixed": 16},
        "patience": {"fixed": 10},
    }
    good = {"dropout": 0.0, "weight_decay": 1e-6, "label_smoothing": 0.0}
    bad = {"dropout": 0.9, "weight_decay": 0.5, "label_smoothing": 0.5}
    spec = tiny_spec(
        name="race",
        n_trials=2,
        search_space=space,
        enqueue=[good, bad],
        confirm={"top_k": 2, "repeats": 3, "race": race},
    )
    study_id = insert_study(migrated_db_url, spec)
    settings = settings_for(migrated_db_url)
    counts = run_workers_in_threads(settings, 2)

    db = Db(migrated_db_url)
    study = db.study(study_id)
    trials = db.trials(study_id)
    confirms = [t for t in trials if t.role == TrialRole.confirm]
    repeats = {n: sum(c.repeat_of == n for c in confirms) for n in (0, 1)}
    extra = 4 if race else 6
    assert study.status == StudyStatus.completed
    assert sum(counts) == 2 + extra
    assert (study.n_complete, study.n_extra, study.n_extra_finished) == (2, extra, extra)
    assert all(t.state == TrialState.complete for t in trials)
    assert repeats == ({0: 3, 1: 1} if race else {0: 3, 1: 3})
    assert len({c.train_seed for c in confirms}) == extra
