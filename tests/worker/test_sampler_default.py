"""TPE with a share of random proposals (`random_share`), as workers build it from a spec."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import optuna
import pytest
from fastapi.testclient import TestClient
from optuna.distributions import BaseDistribution, FloatDistribution
from optuna.study import Study
from optuna.trial import FrozenTrial

from service.app import create_app
from service.optuna_builders import DEFAULT_RANDOM_SHARE, build_sampler
from service.samplers import RandomShareSampler, is_random_trial
from service.spec import StudySpec
from service.worker.optimization import trial_seed
from tests.support import settings_for, tiny_spec
from tests.worker.conftest import Db, insert_study, run_workers_in_threads

SPACE: dict[str, BaseDistribution] = {
    "x": FloatDistribution(0.0, 1.0),
    "y": FloatDistribution(-5.0, 5.0),
}


class Lowest(optuna.samplers.RandomSampler):
    """A base sampler whose proposals are recognizable: always each parameter's low bound."""

    def sample_independent(
        self, study: Study, trial: FrozenTrial, name: str, dist: BaseDistribution
    ) -> Any:
        assert isinstance(dist, FloatDistribution)
        return dist.low


def spec(**fields: Any) -> StudySpec:
    return StudySpec.model_validate({"name": "s", "trainer": "digits-mlp", **fields})


def proposed_at_random(study: optuna.Study) -> list[int]:
    """Numbers of the trials whose params are not all at the low bound (not `Lowest`'s)."""
    return [t.number for t in study.trials if t.params != {"x": 0.0, "y": -5.0}]


@pytest.mark.parametrize("share", [0.1, 0.2, 0.5])
def test_the_documented_share_of_trials_is_random_and_evenly_spaced(share: float) -> None:
    study = optuna.create_study(sampler=RandomShareSampler(Lowest(), share, seed=0))
    for _ in range(40):
        trial = study.ask(SPACE)
        study.tell(trial, trial.params["x"])
    random = proposed_at_random(study)
    assert len(random) == round(40 * share)
    assert random == [n for n in range(40) if is_random_trial(n, share)]
    gaps = {b - a for a, b in itertools.pairwise(random)}
    assert gaps == {round(1 / share)}  # evenly spaced: every 10th, 5th, 2nd trial


def test_share_zero_never_proposes_at_random_and_bad_shares_are_refused() -> None:
    study = optuna.create_study(sampler=RandomShareSampler(Lowest(), 0.0))
    for _ in range(20):
        study.tell(study.ask(SPACE), 0.0)
    assert proposed_at_random(study) == []
    for bad in (-0.1, 0.51, 1.0):
        with pytest.raises(ValueError, match="random_share"):
            RandomShareSampler(Lowest(), bad)


def run(sampler: optuna.samplers.BaseSampler, n: int = 25) -> list[dict[str, Any]]:
    study = optuna.create_study(sampler=sampler)
    study.optimize(lambda t: (t.suggest_float("x", 0, 1) - 0.3) ** 2 + t.suggest_int("k", 0, 9), n)
    return [t.params for t in study.trials]


def test_the_default_sampler_is_reproducible_with_a_seed() -> None:
    s = spec(sampler={"seed": 7})
    first = run(build_sampler(s.sampler, s, 7))
    assert first == run(build_sampler(s.sampler, s, 7))
    assert first != run(build_sampler(s.sampler, s, 8))


def test_random_share_option_builds_the_wrapper_and_zero_plain_tpe() -> None:
    s = spec(sampler={"name": "tpe", "options": {"random_share": 0.25, "n_startup_trials": 4}})
    sampler = build_sampler(s.sampler, s, 1)
    assert isinstance(sampler, RandomShareSampler)
    assert sampler.share == 0.25
    assert isinstance(sampler.base, optuna.samplers.TPESampler)
    assert sampler.base._n_startup_trials == 4  # the other options reach TPE
    s = spec(sampler={"name": "tpe", "options": {"random_share": 0}})
    assert isinstance(build_sampler(s.sampler, s, 1), optuna.samplers.TPESampler)
    s = spec()
    default = build_sampler(s.sampler, s, 1)
    if DEFAULT_RANDOM_SHARE > 0:
        assert isinstance(default, RandomShareSampler)
        assert default.share == DEFAULT_RANDOM_SHARE
    else:
        assert isinstance(default, optuna.samplers.TPESampler)


def test_a_multi_objective_study_with_constraints_runs_through_the_wrapper() -> None:
    sampler = RandomShareSampler(optuna.samplers.TPESampler(seed=3, n_startup_trials=5), 0.2, 3)
    study = optuna.create_study(directions=["minimize", "maximize"], sampler=sampler)

    def objective(trial: optuna.Trial) -> tuple[float, float]:
        x, y = trial.suggest_float("x", 0, 1), trial.suggest_float("y", 0, 1)
        trial.set_constraint("x<=0.8", x - 0.8)
        return x + y, x * y

    study.optimize(objective, n_trials=30)
    assert len(study.trials) == 30
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    assert study.best_trials  # the Pareto front of feasible trials


def test_two_workers_on_rdb_storage_agree_which_trials_are_random(tmp_path: Path) -> None:
    # Two workers, each with its own sampler (rebuilt per trial with another seed, as
    # service.worker.optimization.open_study does) on one study in a database.
    url = f"sqlite:///{tmp_path / 'study.db'}"
    optuna.create_study(study_name="shared", storage=url)
    for claim in range(20):
        sampler = RandomShareSampler(Lowest(), 0.2, seed=trial_seed(5, claim))
        study = optuna.load_study(study_name="shared", storage=url, sampler=sampler)
        trial = study.ask(SPACE)
        study.tell(trial, trial.params["x"])
    assert proposed_at_random(study) == [4, 9, 14, 19]


def test_tpe_with_random_share_on_rdb_storage_with_two_workers(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'study.db'}"
    optuna.create_study(study_name="shared", storage=url, directions=["minimize", "minimize"])
    s = spec(sampler={"name": "tpe", "seed": 1, "options": {"random_share": 0.2}})
    workers = [
        optuna.load_study(
            study_name="shared", storage=url, sampler=build_sampler(s.sampler, s, seed)
        )
        for seed in (11, 12)
    ]
    running = [w.ask(SPACE) for w in workers]  # both run at once (constant liar)
    for i in range(16):
        worker = workers[i % 2]
        trial = running[i % 2]
        worker.tell(trial, [trial.params["x"], abs(trial.params["y"])])
        running[i % 2] = worker.ask(SPACE)
    trials = workers[0].get_trials(deepcopy=False)
    assert sum(t.state == optuna.trial.TrialState.COMPLETE for t in trials) == 16


@pytest.mark.parametrize("bad", [0.6, -0.1, "many", True, None])
def test_a_bad_random_share_is_a_422_naming_the_option(migrated_db_url: str, bad: Any) -> None:
    body = tiny_spec("bad-share")
    body["sampler"] = {"name": "tpe", "options": {"random_share": bad}}
    with TestClient(create_app(settings_for(migrated_db_url))) as client:
        response = client.post("/api/v1/studies", json=body)
    assert response.status_code == 422, response.text
    (detail,) = response.json()["detail"]
    assert detail["loc"] == ["body", "sampler", "options", "random_share"]
    assert "random_share" in detail["msg"]


@pytest.mark.parametrize("sampler", ["tpe", "random"])
def test_a_seeded_study_submitted_again_samples_the_same_trials(
    migrated_db_url: str, sampler: str
) -> None:
    """`sampler.seed` repeats a study on a database that already holds others (a server's):
    one worker, the same spec twice, the same parameters trial by trial."""
    spec = tiny_spec(n_trials=4, sampler={"name": sampler, "seed": 3})
    first = insert_study(migrated_db_url, {**spec, "name": "seeded-1"})
    second = insert_study(migrated_db_url, {**spec, "name": "seeded-2"})
    run_workers_in_threads(settings_for(migrated_db_url), 1)
    db = Db(migrated_db_url)
    params = [
        [(t.number, t.dropout, t.weight_decay) for t in db.trials(study)]
        for study in (first, second)
    ]
    assert len(params[0]) == 4
    assert params[0] == params[1]
