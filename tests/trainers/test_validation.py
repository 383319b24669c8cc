"""Bad inputs are refused with messages that name the field and the rule."""

from __future__ import annotations

import pydantic
import pytest

from trainers import ObjectiveSpec, RegularizationParams, SearchSpace, get_trainer, run_trial
from trainers.builtin import DigitsConfig, SyntheticConfig
from trainers.registry import UnknownTrainerError


@pytest.mark.parametrize(
    ("field", "value", "rule"),
    [
        ("dropout", 1.0, "less than 1"),
        ("dropout", -0.1, "greater than or equal to 0"),
        ("label_smoothing", 1.0, "less than 1"),
        ("weight_decay", -1e-3, "greater than or equal to 0"),
        ("l1", -1.0, "greater than or equal to 0"),
        ("batch_size", 0, "greater than or equal to 1"),
        ("patience", -1, "greater than or equal to 0"),
    ],
)
def test_params_name_the_field_and_rule(field: str, value: float, rule: str) -> None:
    with pytest.raises(pydantic.ValidationError) as info:
        RegularizationParams(**{field: value})
    (error,) = info.value.errors()
    assert error["loc"] == (field,)
    assert rule in error["msg"]


def test_params_accept_boundaries() -> None:
    params = RegularizationParams(
        weight_decay=0, l1=0, dropout=0.0, label_smoothing=0.0, batch_size=1, patience=0
    )
    assert params.batch_size == 1


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ({"dropout": {"low": 0.0, "high": 1.0}}, "dropout.high must be < 1"),
        ({"batch_size": {"choices": [32, 0]}}, "batch_size.choices must be positive integers"),
        ({"weight_decay": {"low": 0.0, "high": 0.1, "log": True}}, "log: true needs low > 0"),
        ({"patience": {"fixed": -2}}, "patience.fixed must be a non-negative integer"),
        ({"l1": {"low": 0.5, "high": 0.1}}, "low must be <= high"),
    ],
)
def test_search_space_errors(space: dict[str, object], message: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=message):
        SearchSpace.model_validate(space)


def test_trainer_config_errors_name_the_field() -> None:
    with pytest.raises(pydantic.ValidationError) as info:
        get_trainer("digits-mlp").validate_config({"max_epochs": 0, "hidden_sizes": [0]})
    locs = {error["loc"]: error["msg"] for error in info.value.errors()}
    assert "greater than or equal to 1" in locs[("max_epochs",)]
    assert "greater than or equal to 1" in locs[("hidden_sizes", 0)]
    with pytest.raises(pydantic.ValidationError, match="val_fraction \\+ test_fraction"):
        DigitsConfig(val_fraction=0.5, test_fraction=0.45)
    with pytest.raises(pydantic.ValidationError, match="n_informative must be <= n_features"):
        SyntheticConfig(n_features=4, n_informative=6)
    with pytest.raises(pydantic.ValidationError, match="epochs"):
        get_trainer("wine-mlp").validate_config({"epochs": 3})  # unknown key: extra forbidden


def test_unknown_trainer_lists_known_ones() -> None:
    with pytest.raises(UnknownTrainerError, match=r"unknown trainer 'nope'.*digits-mlp"):
        get_trainer("nope")


def test_objective_metric_must_be_logged_by_the_trainer() -> None:
    import optuna

    spec = ObjectiveSpec(trainer="wine-mlp", metric="val_f1")
    with pytest.raises(ValueError, match="'val_f1' is not logged by trainer 'wine-mlp'"):
        run_trial(optuna.trial.FixedTrial({}), spec)
