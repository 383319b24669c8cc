"""Every trial's training seed: derived, recorded, honoured, and reproducible (issue 19)."""

from __future__ import annotations

from typing import Any

import optuna
import pytest

from tests.trainers.conftest import fixed_space, synthetic_spec
from trainers import ObjectiveSpec, RegularizationParams, Trainer, get_trainer, run_trial
from trainers import registry as registry_module
from trainers.objective import train_seed_for


def _trial(train_seed: int | None = None, number: int = 0) -> optuna.trial.FixedTrial:
    trial = optuna.trial.FixedTrial({}, number=number)
    if train_seed is not None:
        trial.set_user_attr("train_seed", train_seed)
    return trial


def _spec(name: str) -> ObjectiveSpec:
    if name == "synthetic-mlp":
        return synthetic_spec(fixed_space(dropout=0.3, batch_size=16))
    return ObjectiveSpec(
        trainer="insight-cnn",
        trainer_config={"max_epochs": 2, "n_train": 200},
        search_space=fixed_space(dropout=0.3, batch_size=32),
        metric="val_nll_custom",
    )


@pytest.mark.parametrize("name", ["synthetic-mlp", "insight-cnn"])
def test_same_seed_same_result_other_seed_other_result(test_plugin: str, name: str) -> None:
    # insight-cnn seeds nothing itself: regtune's seed_everything alone makes it reproducible
    first, again, other = _trial(11), _trial(11), _trial(12)
    a = run_trial(first, _spec(name))
    b = run_trial(again, _spec(name))
    c = run_trial(other, _spec(name))
    assert a.history == b.history
    assert c.history != a.history
    assert (first.user_attrs["train_seed"], other.user_attrs["train_seed"]) == (11, 12)


def test_the_seed_is_derived_from_the_trial_number_and_recorded() -> None:
    spec = synthetic_spec(max_epochs=1)
    studies = []
    for _ in range(2):
        study = optuna.create_study()
        study.optimize(lambda t: run_trial(t, spec).value, n_trials=2)
        studies.append([t.user_attrs["train_seed"] for t in study.trials])
    assert studies[0] == studies[1]  # trial n of a study always gets the same seed
    assert studies[0][0] != studies[0][1]  # and trials get different ones
    assert all(isinstance(s, int) and 0 <= s < 2**32 for s in studies[0])
    # the spec's seed is mixed in
    config = get_trainer("synthetic-mlp").validate_config(spec.trainer_config)
    assert train_seed_for(_trial(), spec, config) != train_seed_for(
        _trial(), ObjectiveSpec(trainer="synthetic-mlp", seed=1), config
    )


def test_a_builtin_config_train_seed_pins_search_trials_but_not_repeats() -> None:
    trial = _trial(number=3)
    pinned = run_trial(trial, synthetic_spec(train_seed=7, max_epochs=2))
    assert trial.user_attrs["train_seed"] == 7  # what it actually trained with
    again = run_trial(_trial(train_seed=7), synthetic_spec(max_epochs=2))
    assert pinned.history == again.history
    # a confirmation repeat carries its own seed: it wins over the pin, so repeats differ
    repeat = _trial(train_seed=99)
    repeated = run_trial(repeat, synthetic_spec(train_seed=7, max_epochs=2))
    assert repeat.user_attrs["train_seed"] == 99
    assert repeated.history != pinned.history
    assert (
        repeated.history == run_trial(_trial(train_seed=99), synthetic_spec(max_epochs=2)).history
    )


def test_a_build_that_takes_seed_receives_it(
    test_plugin: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    tiny = get_trainer("test-plugin-lightning")
    seen: list[int] = []

    def build(params: RegularizationParams, config: Any, *, seed: int) -> tuple[Any, Any]:
        seen.append(seed)
        return tiny.build(params, config)

    seeded = Trainer(
        name="seeded",
        description="test",
        config_model=tiny.config_model,
        build=build,
        metrics=tiny.metrics,
    )
    assert seeded.takes_seed() and not tiny.takes_seed()
    monkeypatch.setattr(
        registry_module, "_cache", {**registry_module.available_trainers(), "seeded": seeded}
    )
    run_trial(
        _trial(train_seed=123), ObjectiveSpec(trainer="seeded", trainer_config={"max_epochs": 1})
    )
    assert seen == [123]


def test_an_out_of_range_seed_attribute_is_refused() -> None:
    with pytest.raises(ValueError, match="train_seed"):
        run_trial(_trial(train_seed=-1), synthetic_spec(max_epochs=1))
