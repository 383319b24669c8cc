"""The default pruner the benchmarks justify ('auto'), as a worker builds it from a spec."""

from __future__ import annotations

from typing import Any

import optuna
import pytest

from service.spec import StudySpec
from service.worker.optimization import auto_warmup_steps, build_pruner


def spec(**fields: Any) -> StudySpec:
    return StudySpec.model_validate({"name": "s", "trainer": "digits-mlp", **fields})


@pytest.mark.parametrize(
    ("patience", "max_epochs", "warmup"),
    [
        ({"low": 2, "high": 10}, 30, 2),  # the shortest patience the space allows
        ({"fixed": 6}, 40, 6),
        ({"low": 8, "high": 12}, 12, 3),  # capped at max_epochs // 4
        ({"choices": [2, 1, 8]}, 40, 1),  # the smallest choice (was 5)
        (None, 40, 5),  # patience not searched: regtune's default, 5
    ],
)
def test_auto_pruner_waits_out_the_shortest_patience(
    patience: dict[str, Any] | None, max_epochs: int, warmup: int
) -> None:
    space = {"patience": patience} if patience else {}
    s = spec(search_space=space, trainer_config={"max_epochs": max_epochs})
    assert s.pruner.name == "auto"
    assert auto_warmup_steps(s) == warmup
    pruner = build_pruner(s.pruner, s)
    assert isinstance(pruner, optuna.pruners.PercentilePruner)
    assert pruner._percentile == 75.0  # keeps the best three quarters at each epoch
    assert pruner._n_warmup_steps == warmup
    assert pruner._n_startup_trials == 5


def test_auto_pruner_options_override_the_derived_values() -> None:
    options = {"n_warmup_steps": 0, "n_startup_trials": 2, "percentile": 50.0}
    s = spec(pruner={"name": "auto", "options": options})
    pruner = build_pruner(s.pruner, s)
    assert isinstance(pruner, optuna.pruners.PercentilePruner)
    assert (pruner._n_warmup_steps, pruner._n_startup_trials, pruner._percentile) == (0, 2, 50.0)


def test_auto_pruner_prunes_a_bad_trial_after_the_warm_up() -> None:
    s = spec(search_space={"patience": {"fixed": 2}}, trainer_config={"max_epochs": 20})
    study = optuna.create_study(pruner=build_pruner(s.pruner, s))
    for _ in range(5):  # start-up trials: complete, loss 1.0 at every step
        t = study.ask()
        for step in range(5):
            t.report(1.0, step)
        study.tell(t, 1.0)
    bad = study.ask()
    bad.report(9.0, 0)
    bad.report(9.0, 1)
    assert not bad.should_prune()  # within the warm-up (2 epochs)
    bad.report(9.0, 2)
    assert bad.should_prune()


def test_auto_pruner_keeps_a_trial_worse_than_the_median_but_not_the_worst_quarter() -> None:
    s = spec(search_space={"patience": {"fixed": 2}}, trainer_config={"max_epochs": 20})
    study = optuna.create_study(pruner=build_pruner(s.pruner, s))
    for loss in (1.0, 2.0, 3.0, 4.0, 5.0):  # start-up trials; at each step median 3, 75th pct 4
        t = study.ask()
        for step in range(5):
            t.report(loss, step)
        study.tell(t, loss)
    middling, poor = study.ask(), study.ask()
    for step in range(3):
        middling.report(3.5, step)
        poor.report(4.5, step)
    assert not middling.should_prune()  # a median pruner would cut it
    assert poor.should_prune()
