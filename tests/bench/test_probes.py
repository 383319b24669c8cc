"""bench/probes/confirm_top_k.py: the budget it searches on and the choice it makes."""

from __future__ import annotations

import math
from typing import Any

import optuna
import pytest
import search_efficiency as se
from probes import confirm_top_k as probe

from trainers import run_trial

TINY_EPOCHS = 2


def _value(trial: optuna.trial.FrozenTrial) -> float:
    assert trial.value is not None
    return trial.value


def test_finished_within_keeps_complete_trials_finished_inside_the_budget() -> None:
    def trial(epochs: int, state: optuna.trial.TrialState) -> Any:
        return optuna.trial.create_trial(
            state=state,
            value=1.0 if state == optuna.trial.TrialState.COMPLETE else None,
            user_attrs={"epochs_run": epochs},
        )

    complete, pruned = optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED
    trials = [
        trial(3, complete),
        trial(1, pruned),
        trial(2, complete),
        trial(1, complete),
    ]
    rows = 10
    study = optuna.create_study()
    study.add_trials(trials)
    # what run_arm records: samples spent after each trial, in finish order
    curve = [(30, 1.0), (40, 1.0), (60, 1.0), (70, 1.0)]
    run = se.ArmRun(curve=curve, study=study)
    kept = study.trials

    def within(budget: float) -> list[optuna.trial.FrozenTrial]:
        return probe.finished_within(run, budget)

    assert within(5 * rows) == [kept[0]]  # 3, 4, then 6 > 5
    assert within(6 * rows) == [kept[0], kept[2]]
    assert within(math.inf) == [kept[0], kept[2], kept[3]]


def test_confirm_retrains_the_k_best_with_other_seeds_and_picks_the_lowest_mean(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spec = se.study_spec("digits-noisy", max_epochs=TINY_EPOCHS)
    rows = se.train_rows(spec)
    run = se.run_arm(
        spec, optuna.samplers.RandomSampler(seed=0), optuna.pruners.NopPruner(), rows, n_trials=4
    )
    assert run.study is not None
    trials = run.study.trials
    calls: list[tuple[dict[str, Any], int, float]] = []

    def spy(trial: optuna.trial.BaseTrial, target: Any, observer: Any = None) -> Any:
        outcome = run_trial(trial, target, observer)
        calls.append((dict(trial.params), target.trainer_config["train_seed"], outcome.value))
        return outcome

    monkeypatch.setattr(se, "run_trial", spy)  # what the probe's Retrainer calls
    picked, spent = probe.confirm(spec, rows, trials, k=2, r=2)

    best_two = sorted(trials, key=_value)[:2]
    assert [params for params, _, _ in calls] == [t.params for t in best_two for _ in range(2)]
    # training seeds other than the scoring seeds (Retrainer: 1001..)
    assert {seed for _, seed, _ in calls} == {2001, 2002}
    assert spent == 4 * TINY_EPOCHS * rows  # patience >= 2: no early stop in 2 epochs
    means = [(_value(t) + sum(v for p, _, v in calls if p == t.params)) / 3 for t in best_two]
    assert picked == best_two[means.index(min(means))].params
