"""Named search-space presets: each is a valid space, merges under the user's parameters, and
re-validates to itself (workers re-validate the stored, expanded spec)."""

from __future__ import annotations

from typing import Any

import optuna
import pydantic
import pytest

from trainers import (
    PARAM_NAMES,
    PRESETS,
    Choices,
    Fixed,
    Range,
    SearchSpace,
    UnknownPresetError,
    get_preset,
    preset_names,
)

NAMES = ["fine-tune", "sparse", "standard", "wide"]


def test_the_registry_holds_the_documented_presets() -> None:
    assert preset_names() == NAMES
    assert next(iter(PRESETS)) == "standard"  # listings show the general default first
    for preset in PRESETS.values():
        assert preset.description and "\n" not in preset.description


@pytest.mark.parametrize("name", NAMES)
def test_each_preset_is_a_valid_space_over_every_parameter(name: str) -> None:
    preset = get_preset(name)
    assert set(preset.search_space) == set(PARAM_NAMES)
    plain = SearchSpace.model_validate(preset.document())  # the document alone, no preset name
    via_name = SearchSpace.model_validate({"preset": name})
    assert via_name.preset == name
    assert via_name.model_dump(exclude={"preset"}) == plain.model_dump(exclude={"preset"})
    # sampling works as in a worker, and lands inside the space
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(5):
        trial = study.ask()
        params = via_name.sample(trial)
        for param in via_name.searched():
            assert via_name.contains(param, getattr(params, param)), (param, params)


@pytest.mark.parametrize("name", NAMES)
def test_weight_decay_and_l1_ranges_are_log_scale(name: str) -> None:
    space = SearchSpace.model_validate({"preset": name})
    for param in ("weight_decay", "l1"):
        spec = getattr(space, param)
        assert isinstance(spec, Range | Fixed), (name, param)
        if isinstance(spec, Range):
            assert spec.log and spec.low > 0, (name, param)


def test_only_sparse_searches_l1() -> None:
    for name in NAMES:
        l1 = SearchSpace.model_validate({"preset": name}).l1
        if name == "sparse":
            assert l1 == Range(low=1e-7, high=1e-3, log=True)
        else:
            assert l1 == Fixed(fixed=0.0)


def test_what_the_user_gives_wins_and_the_preset_fills_the_rest() -> None:
    space = SearchSpace.model_validate(
        {
            "preset": "standard",
            "dropout": {"low": 0.1, "high": 0.3},
            "batch_size": {"fixed": 64},
            "patience": None,  # null counts as not given: the preset fills it
        }
    )
    assert space.dropout == Range(low=0.1, high=0.3)
    assert space.batch_size == Fixed(fixed=64)
    assert space.weight_decay == Range(low=1e-6, high=1e-1, log=True)
    assert space.label_smoothing == Range(low=0.0, high=0.2)
    assert space.patience == Range(low=3, high=10)
    assert space.searched() == ["weight_decay", "dropout", "label_smoothing", "patience"]


def test_user_parameters_still_obey_the_rules() -> None:
    with pytest.raises(pydantic.ValidationError, match=r"dropout\.high must be < 1"):
        SearchSpace.model_validate({"preset": "wide", "dropout": {"low": 0.0, "high": 1.0}})


def test_without_a_preset_nothing_changes() -> None:
    space = SearchSpace.model_validate({"dropout": {"low": 0.0, "high": 0.5}})
    assert space.preset is None
    assert space.searched() == ["dropout"]


def test_unknown_preset_names_the_field_and_lists_the_known_ones() -> None:
    with pytest.raises(pydantic.ValidationError) as info:
        SearchSpace.model_validate({"preset": "foo", "dropout": {"low": 0.0, "high": 0.5}})
    (error,) = info.value.errors()
    assert error["msg"] == (
        "Value error, preset: unknown preset 'foo'; "
        "choose one of: fine-tune, sparse, standard, wide"
    )
    with pytest.raises(UnknownPresetError, match="unknown preset 'Standard'"):
        get_preset("Standard")  # names are case-sensitive


def test_a_non_string_preset_is_a_type_error_at_the_field() -> None:
    with pytest.raises(pydantic.ValidationError) as info:
        SearchSpace.model_validate({"preset": 3})
    (error,) = info.value.errors()
    assert error["loc"] == ("preset",) and error["type"] == "string_type"


@pytest.mark.parametrize(
    "document",
    [
        {"preset": "standard"},
        {"preset": "sparse", "l1": {"fixed": 1e-5}},
        {"preset": "fine-tune", "batch_size": {"choices": [8, 16]}, "dropout": None},
        {"preset": "wide", "weight_decay": {"low": 1e-4, "high": 1e-2, "step": 1e-4}},
    ],
)
def test_revalidating_the_stored_document_gives_the_same_space(document: dict[str, Any]) -> None:
    space = SearchSpace.model_validate(document)
    stored = space.model_dump(mode="json")  # what the service stores for a study
    assert stored["preset"] == document["preset"]
    assert all(stored[p] is not None for p in PARAM_NAMES)  # expanded, not a reference
    again = SearchSpace.model_validate(stored)
    assert again == space
    assert again.model_dump(mode="json") == stored
    assert again.distributions() == space.distributions()


def test_preset_documents_are_copies() -> None:
    document = get_preset("standard").document()
    document["dropout"]["high"] = 0.9
    assert get_preset("standard").search_space["dropout"]["high"] == 0.5


def test_the_json_schema_lists_the_preset_names() -> None:
    schema = SearchSpace.model_json_schema()["properties"]["preset"]
    (named,) = [s for s in schema["anyOf"] if s.get("type") == "string"]
    assert named["enum"] == NAMES


def test_choices_stay_choices() -> None:
    space = SearchSpace.model_validate({"preset": "wide"})
    assert space.batch_size == Choices(choices=[16, 32, 64, 128, 256, 512])
