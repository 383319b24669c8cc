"""bench/search_efficiency.py: same spec and data for every arm, honest sample accounting."""

from __future__ import annotations

import math
from typing import Any

import optuna
import pytest
import search_efficiency as se

from trainers import run_trial

TINY_EPOCHS = 2


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Every call of run_trial made by the arms: the spec, the distributions, the epochs run."""
    calls: list[dict[str, Any]] = []

    def spy(trial: optuna.trial.BaseTrial, spec: Any, observer: Any = None) -> Any:
        call: dict[str, Any] = {"spec": spec}
        calls.append(call)
        try:
            outcome = run_trial(trial, spec, observer)
        finally:
            call["distributions"] = dict(trial.distributions)
            call["epochs_run"] = trial.user_attrs.get("epochs_run")
        return outcome

    monkeypatch.setattr(se, "run_trial", spy)
    return calls


def test_the_three_arms_train_the_same_spec_data_and_space(
    recorded: list[dict[str, Any]],
) -> None:
    spec = se.study_spec("digits-noisy", max_epochs=TINY_EPOCHS)
    rows = se.train_rows(spec)
    seen = {}
    for name, arm in se.ARMS.items():
        start = len(recorded)
        arm(spec, 0, rows, 2, math.inf)
        seen[name] = recorded[start:]
    specs = {repr(c["spec"]) for calls in seen.values() for c in calls}
    assert len(specs) == 1  # one ObjectiveSpec: same trainer, config (label noise), space, metric
    only = recorded[0]["spec"]
    assert only.trainer_config["label_noise"] == 0.4
    assert only.trainer_config["max_epochs"] == TINY_EPOCHS
    spaces = {repr(sorted(c["distributions"].items())) for c in recorded}
    assert len(spaces) == 1
    assert set(recorded[0]["distributions"]) == set(spec.search_space.searched())


def test_samples_are_epochs_times_training_rows_pruned_trials_included(
    recorded: list[dict[str, Any]],
) -> None:
    spec = se.study_spec("digits-noisy", max_epochs=TINY_EPOCHS)
    rows = se.train_rows(spec)
    # digits: 1,797 rows, 20 % validation and 20 % test -> about 60 % train
    assert 1000 < rows < 1100
    sampler = optuna.samplers.RandomSampler(seed=0)
    run = se.run_arm(spec, sampler, optuna.pruners.NopPruner(), rows, n_trials=2)
    assert run.samples == sum(c["epochs_run"] for c in recorded) * rows
    assert run.samples == 2 * TINY_EPOCHS * rows  # patience >= 2: no early stop in 2 epochs

    recorded.clear()
    # prunes every trial at its first report: each costs exactly one epoch
    pruner = optuna.pruners.ThresholdPruner(upper=0.0)
    run = se.run_arm(spec, optuna.samplers.RandomSampler(seed=1), pruner, rows, n_trials=3)
    assert run.n_pruned == 3
    assert [c["epochs_run"] for c in recorded] == [1, 1, 1]
    assert run.samples == 3 * rows
    assert run.curve == [(rows, math.inf), (2 * rows, math.inf), (3 * rows, math.inf)]


def test_budget_stops_an_arm_at_the_first_trial_past_it() -> None:
    spec = se.study_spec("digits-noisy", max_epochs=TINY_EPOCHS)
    rows = se.train_rows(spec)
    sampler = optuna.samplers.RandomSampler(seed=0)
    run = se.run_arm(
        spec, sampler, optuna.pruners.NopPruner(), rows, n_trials=50, sample_budget=rows * 3
    )
    assert run.n_trials == 2  # 2 epochs each: the second trial crosses 3 epochs' worth


def test_anytime_curve_queries() -> None:
    run = se.ArmRun(curve=[(100, 2.0), (200, 1.5), (300, 1.5), (400, 1.0)])
    assert run.best_at(50) == math.inf
    assert run.best_at(250) == 1.5
    assert run.best_at(math.inf) == 1.0
    assert run.samples_to_reach(1.5) == 200
    assert run.samples_to_reach(1.2) == 400
    assert run.samples_to_reach(0.5) == math.inf


def test_candidate_arm_changes_only_sampler_or_pruner(recorded: list[dict[str, Any]]) -> None:
    spec = se.study_spec("digits-noisy", max_epochs=TINY_EPOCHS)
    name, arm = se.candidate_arm("none", {"pruner": {"name": "none"}})
    assert name == "c' none"
    arm(spec, 0, se.train_rows(spec), 1, math.inf)
    assert recorded[0]["spec"] == se.objective_spec(spec)


def test_main_prints_ratio_last(capsys: pytest.CaptureFixture[str], monkeypatch: Any) -> None:
    monkeypatch.setattr(
        "sys.argv",
        [
            "search_efficiency.py",
            "--seeds",
            "1",
            "--trials",
            "2",
            "--max-epochs",
            "1",
            "--tasks",
            "digits-noisy",
        ],
    )
    se.main()
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].startswith("ratio: ")
    float(lines[-1].removeprefix("ratio: "))
