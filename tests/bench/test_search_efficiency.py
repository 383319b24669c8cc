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
    assert [run.trials_within(s) for s in (50, 100, 250, math.inf)] == [0, 1, 2, 4]


def test_incumbents_are_the_configs_the_arm_would_have_returned() -> None:
    spec = se.study_spec("digits-noisy", max_epochs=TINY_EPOCHS)
    rows = se.train_rows(spec)
    run = se.run_arm(
        spec, optuna.samplers.RandomSampler(seed=0), optuna.pruners.NopPruner(), rows, n_trials=4
    )
    assert run.incumbents[-1][1] == run.best_params
    assert [spent for spent, _ in run.incumbents] == sorted({s for s, _ in run.incumbents})
    assert run.incumbent_at(0) is None
    for spent, params in run.incumbents:
        assert run.incumbent_at(spent) == params
        assert run.best_at(spent) < run.best_at(spent - 1)  # each one was a new best


def test_retrainer_scores_a_config_by_its_mean_over_other_training_seeds(
    recorded: list[dict[str, Any]],
) -> None:
    spec = se.study_spec("digits-noisy", max_epochs=TINY_EPOCHS)
    params = {
        "weight_decay": 1e-3,
        "dropout": 0.2,
        "label_smoothing": 0.1,
        "batch_size": 64,
        "patience": 2,
    }
    retrainer = se.Retrainer(spec, 2)
    value, acc = retrainer(params)
    assert [c["spec"].trainer_config["train_seed"] for c in recorded] == [1001, 1002]
    study_config = dict(se.objective_spec(spec).trainer_config)
    assert study_config.pop("train_seed", None) is None
    for call in recorded:  # everything but the training seed is the study's spec
        config = dict(call["spec"].trainer_config)
        del config["train_seed"]
        assert config == study_config
    direct = [run_trial(optuna.trial.FixedTrial(params), c["spec"]) for c in recorded]
    assert value == pytest.approx(sum(o.value for o in direct) / 2)
    assert retrainer.runs(params) == pytest.approx([o.value for o in direct])
    assert 0.0 < acc <= 1.0
    assert retrainer(dict(params)) == (value, acc)  # cached: no new training
    assert len(recorded) == 2  # the cached call trained nothing
    nothing, no_acc = retrainer(None)
    assert nothing == math.inf and math.isnan(no_acc)

    run = se.ArmRun(incumbents=[(100, {"x": 1}), (300, params)])
    retrainer._cache[(("x", 1),)] = ([value + 1.0], [0.5])  # the first incumbent re-trains worse
    assert retrainer.value_at(run, 200) == value + 1.0
    assert retrainer.value_at(run, 300) == value
    assert retrainer.samples_to_reach(run, value) == 300
    assert retrainer.samples_to_reach(run, value - 1.0) == math.inf


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
            "--retrain",
            "1",
        ],
    )
    se.main()
    lines = capsys.readouterr().out.strip().splitlines()
    assert any(line.startswith("## digits-noisy, chosen configs re-trained") for line in lines)
    assert lines[-2].startswith("(c) samples to reach (a)'s chosen config re-trained")
    assert lines[-1].startswith("ratio: ")
    float(lines[-1].removeprefix("ratio: "))
