"""Every rule of the study spec: 422, with `loc` and `msg` naming the field and the rule.

Payload validation happens before any database access, so these run on one SQLite-backed app
per module (the backend-parametrized suites cover the database paths).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.migrations import upgrade
from tests.support import settings_for, tiny_spec


@pytest.fixture(scope="module")
def sqlite_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    url = f"sqlite:///{Path(tmp_path_factory.mktemp('validation')) / 'regtune.db'}"
    upgrade(url)
    with TestClient(create_app(settings_for(url))) as c:
        yield c


def _space(**params: Any) -> dict[str, Any]:
    return {"search_space": params}


# (case id, spec overrides, expected loc, text the message must contain)
CASES: list[tuple[str, dict[str, Any], list[Any], str]] = [
    (
        "bounds-order",
        _space(dropout={"low": 0.5, "high": 0.1}),
        ["body", "search_space", "dropout", "low"],
        "search_space.dropout.low must be <= high",
    ),
    (
        "log-needs-positive-low",
        _space(weight_decay={"low": 0.0, "high": 0.1, "log": True}),
        ["body", "search_space", "weight_decay", "log"],
        "search_space.weight_decay.log: true needs low > 0",
    ),
    (
        "dropout-below-one",
        _space(dropout={"low": 0.1, "high": 1.0}),
        ["body", "search_space", "dropout", "high"],
        "dropout.high must be < 1",
    ),
    (
        "label-smoothing-below-one",
        _space(label_smoothing={"fixed": 1.5}),
        ["body", "search_space", "label_smoothing", "fixed"],
        "label_smoothing.fixed must be < 1",
    ),
    (
        "batch-size-positive",
        _space(batch_size={"choices": [0, 32]}),
        ["body", "search_space", "batch_size", "choices"],
        "batch_size.choices must be positive integers",
    ),
    (
        "batch-size-integer",
        _space(batch_size={"choices": [16, 24.5]}),
        ["body", "search_space", "batch_size", "choices"],
        "batch_size.choices must be positive integers",
    ),
    (
        "weight-decay-non-negative",
        _space(weight_decay={"low": -1.0, "high": 0.1}),
        ["body", "search_space", "weight_decay", "low"],
        "weight_decay.low must be >= 0",
    ),
    (
        "unknown-parameter",
        _space(momentum={"low": 0.1, "high": 0.9}),
        ["body", "search_space", "momentum"],
        "search_space.momentum: Extra inputs are not permitted",
    ),
    (
        "unknown-trainer",
        {"trainer": "resnet-9000"},
        ["body", "trainer"],
        "unknown trainer 'resnet-9000'; registered trainers: ",
    ),
    (
        "trainer-config-schema",
        {"trainer_config": {"max_epochs": 0}},
        ["body", "trainer_config", "max_epochs"],
        "trainer_config.max_epochs: Input should be greater than or equal to 1",
    ),
    (
        "trainer-config-unknown-key",
        {"trainer_config": {"epochs": 3}},
        ["body", "trainer_config", "epochs"],
        "trainer_config.epochs",
    ),
    (
        "objective-metric-not-logged",
        {"objective": {"metric": "bleu", "direction": "maximize"}},
        ["body", "objective", "metric"],
        "objective.metric 'bleu' is not logged by trainer 'synthetic-mlp'",
    ),
    (
        "unknown-sampler",
        {"sampler": {"name": "annealing"}},
        ["body", "sampler", "name"],
        "sampler.name: Input should be 'tpe'",
    ),
    (
        "unknown-pruner",
        {"pruner": {"name": "aggressive"}},
        ["body", "pruner", "name"],
        "pruner.name: Input should be 'none'",
    ),
    (
        "gap-pruner-epochs-at-least-one",
        {"pruner": {"name": "gap", "options": {"epochs": 0}}},
        ["body", "pruner", "options", "epochs"],
        "pruner.options.epochs: must be a whole number from 1 to 1000",
    ),
    (
        "gap-pruner-epochs-bounded",
        {"pruner": {"name": "gap", "options": {"epochs": 10**9}}},
        ["body", "pruner", "options", "epochs"],
        "pruner.options.epochs: must be a whole number from 1 to 1000",
    ),
    (
        "gap-pruner-epochs-whole",
        {"pruner": {"name": "gap", "options": {"epochs": 2.5}}},
        ["body", "pruner", "options", "epochs"],
        "pruner.options.epochs: must be a whole number",
    ),
    (
        "gap-pruner-action-known",
        {"pruner": {"name": "gap", "options": {"action": "warn"}}},
        ["body", "pruner", "options", "action"],
        "pruner.options.action: must be prune or stop",
    ),
    (
        "gap-pruner-other-options-go-to-auto",
        {"pruner": {"name": "gap", "options": {"epochs": 2, "percentile": 150}}},
        ["body", "pruner", "options"],
        "pruner.options: ",
    ),
    (
        "gap-pruner-needs-one-objective",
        {
            "pruner": {"name": "gap"},
            "objective": [{"metric": "val_loss"}, {"metric": "val_ece"}],
        },
        ["body", "pruner", "name"],
        "pruner.name gap: Optuna does not prune studies with several objectives",
    ),
    (
        "grid-needs-choices",
        {"sampler": {"name": "grid"}},
        ["body", "sampler", "name"],
        "sampler.name grid needs every searched parameter given as choices",
    ),
    (
        "n-trials-at-least-one",
        {"budget": {"n_trials": 0}},
        ["body", "budget", "n_trials"],
        "budget.n_trials: Input should be greater than or equal to 1",
    ),
    (
        "name-pattern",
        {"name": "../etc/passwd"},
        ["body", "name"],
        "name: String should match pattern",
    ),
    (
        "confirm-top-k-bounded",
        {"confirm": {"top_k": 11, "repeats": 2}},
        ["body", "confirm", "top_k"],
        "confirm.top_k: Input should be less than or equal to 10",
    ),
    (
        "confirm-repeats-at-least-one",
        {"confirm": {"top_k": 3, "repeats": 0}},
        ["body", "confirm", "repeats"],
        "confirm.repeats: Input should be greater than or equal to 1",
    ),
    (
        "confirm-race-is-a-boolean",
        {"confirm": {"top_k": 3, "repeats": 2, "race": "fast"}},
        ["body", "confirm", "race"],
        "confirm.race: Input should be a valid boolean",
    ),
    (
        "confirm-needs-one-objective",
        {
            "confirm": {"top_k": 2, "repeats": 2},
            "objective": [{"metric": "val_loss"}, {"metric": "val_ece"}],
        },
        ["body", "confirm"],
        "confirm: ranking by the mean of repeats needs a single objective",
    ),
    (
        "reference-is-a-boolean",
        {"reference": "sometimes"},
        ["body", "reference"],
        "reference: Input should be a valid boolean",
    ),
    (
        "step-too-fine",  # before: a 500 (Optuna's Decimal arithmetic on the grid failed)
        _space(dropout={"low": 0.0, "high": 0.5, "step": 1e-300}),
        ["body", "search_space", "dropout", "step"],
        "search_space.dropout.step is too small",
    ),
    (
        "name-not-an-id",  # before: GET /studies/5 answered with study id 5, not study "5"
        {"name": "12345"},
        ["body", "name"],
        "name cannot be all digits",
    ),
    (
        "halving-rate-bounded",  # before: accepted, and the worker's pruner hung on a power
        {"pruner": {"name": "successive_halving", "options": {"min_early_stopping_rate": 10**7}}},
        ["body", "pruner", "options", "min_early_stopping_rate"],
        "10000000 is more than the limit 100",
    ),
    (
        "sampler-option-takes-a-function",  # before: 201, then every trial failed in the worker
        {"sampler": {"name": "tpe", "options": {"gamma": 5, "n_startup_trials": 1}}},
        ["body", "sampler", "options", "gamma"],
        "sampler.options.gamma: takes a Python object (Callable[[int], int] | None)",
    ),
    (
        "sampler-option-of-the-wrong-type",  # before: 201, then a TypeError at the first sample
        {"sampler": {"name": "tpe", "options": {"n_startup_trials": "ten"}}},
        ["body", "sampler", "options", "n_startup_trials"],
        "must be int, got 'ten'",
    ),
    (
        "pruner-option-takes-a-pruner",
        {"pruner": {"name": "patient", "options": {"wrapped_pruner": "median"}}},
        ["body", "pruner", "options", "wrapped_pruner"],
        "takes a Python object (BasePruner | None)",
    ),
    (
        "preset-name-bounded",  # before: all 5,000 characters echoed in the message
        _space(preset="x" * 5000),
        ["body", "search_space", "preset"],
        "search_space.preset: unknown preset '" + "x" * 64 + "'; choose one of",
    ),
    (
        "step-must-divide-the-range",  # before: accepted, Optuna searched 0-0.4 with a warning
        _space(dropout={"low": 0.0, "high": 0.5, "step": 0.2}),
        ["body", "search_space", "dropout", "step"],
        "step 0.2 does not divide high - low: the last point would be 0.4, not high 0.5",
    ),
    (
        "a-boolean-is-not-a-number",  # before: batch_size {fixed: true} trained with batch 1
        _space(batch_size={"fixed": True}),
        ["body", "search_space", "batch_size", "fixed"],
        "Input should be a number, not a boolean",
    ),
    (
        "budget-is-not-a-boolean",  # before: n_trials true was a budget of 1 trial
        {"budget": {"n_trials": True}},
        ["body", "budget", "n_trials"],
        "budget.n_trials: Input should be a number, not a boolean",
    ),
    (
        "grid-enqueue-names-every-parameter",  # before: accepted, then the trial failed
        {
            **_space(dropout={"choices": [0.0, 0.2]}, batch_size={"choices": [16, 32]}),
            "sampler": {"name": "grid"},
            "enqueue": [{"dropout": 0.2}],
        },
        ["body", "enqueue", "0"],
        "enqueue.0: the grid sampler needs every searched parameter; missing batch_size",
    ),
    (
        "unknown-top-level-field",
        {"priority": "high"},
        ["body", "priority"],
        "priority: Extra inputs are not permitted",
    ),
]


@pytest.mark.parametrize(
    ("overrides", "loc", "text"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_invalid_spec_is_422_naming_field_and_rule(
    sqlite_client: TestClient, overrides: dict[str, Any], loc: list[Any], text: str
) -> None:
    spec = tiny_spec("bad")
    if "search_space" in overrides:
        spec["search_space"] = {"patience": {"fixed": 10}, **overrides.pop("search_space")}
    spec.update(overrides)
    r = sqlite_client.post("/api/v1/studies", json=spec)
    assert r.status_code == 422, r.text
    details = r.json()["detail"]
    matching = [d for d in details if d["loc"] == loc]
    assert matching, f"no error at {loc}: {details}"
    assert text in matching[0]["msg"], matching[0]["msg"]
    # nothing was stored
    assert sqlite_client.get("/api/v1/studies/bad").status_code == 404


@pytest.mark.parametrize(
    ("point", "loc", "text"),
    [
        ({"l1": 0.1}, ["body", "enqueue", "0", "l1"], "enqueue.0.l1 is not a searched parameter"),
        ({"dropout": 0.9}, ["body", "enqueue", "0", "dropout"], "0.9 is outside the search space"),
        ({"batch_size": 48}, ["body", "enqueue", "0", "batch_size"], "outside the search space"),
        # off the range's step grid (before: accepted, and Optuna trained 0.15 anyway)
        (
            {"label_smoothing": 0.15},
            ["body", "enqueue", "0", "label_smoothing"],
            "0.15 is outside the search space",
        ),
    ],
    ids=["not-searched", "outside-range", "not-a-choice", "off-the-step-grid"],
)
def test_enqueued_params_must_lie_in_the_search_space(
    sqlite_client: TestClient, point: dict[str, Any], loc: list[Any], text: str
) -> None:
    spec = tiny_spec("bad-enqueue", enqueue=[point])
    if "label_smoothing" in point:  # a range with a step of 0.1
        grid = {"low": 0, "high": 0.3, "step": 0.1}
        spec["search_space"] = {**spec["search_space"], "label_smoothing": grid}
    r = sqlite_client.post("/api/v1/studies", json=spec)
    assert r.status_code == 422, r.text
    matching = [d for d in r.json()["detail"] if d["loc"] == loc]
    assert matching and text in matching[0]["msg"], r.json()["detail"]
    assert sqlite_client.get("/api/v1/studies/bad-enqueue").status_code == 404


def test_enqueued_params_are_the_first_trials(sqlite_client: TestClient) -> None:
    import optuna

    from trainers import SearchSpace

    first = {"dropout": 0.25, "weight_decay": 0.001, "batch_size": 32}
    spec = tiny_spec("warm", enqueue=[first])
    r = sqlite_client.post("/api/v1/studies", json=spec)
    assert r.status_code == 201, r.text
    url = sqlite_client.app.state.settings.database_url  # type: ignore[attr-defined]
    study = optuna.load_study(study_name="warm", storage=url)
    trial = study.ask()  # what the first worker gets, sampled as the worker samples
    params = SearchSpace.model_validate(spec["search_space"]).sample(trial)
    assert trial.number == 0
    assert (params.dropout, params.weight_decay, params.batch_size) == (0.25, 0.001, 32)


def test_several_broken_rules_are_reported_separately(sqlite_client: TestClient) -> None:
    spec = tiny_spec("bad")
    spec["search_space"] = {
        "dropout": {"low": 0.0, "high": 1.0},
        "batch_size": {"choices": [0]},
    }
    r = sqlite_client.post("/api/v1/studies", json=spec)
    assert r.status_code == 422
    locs = [d["loc"] for d in r.json()["detail"]]
    assert ["body", "search_space", "dropout", "high"] in locs
    assert ["body", "search_space", "batch_size", "choices"] in locs


def test_malformed_json_is_422_not_500(sqlite_client: TestClient) -> None:
    r = sqlite_client.post(
        "/api/v1/studies", content=b"{name: ", headers={"content-type": "application/json"}
    )
    assert r.status_code == 422
    assert r.json()["detail"][0]["type"] == "json_invalid"


def test_body_over_the_limit_is_413(sqlite_client: TestClient) -> None:
    limit = sqlite_client.app.state.settings.max_body_bytes  # type: ignore[attr-defined]
    spec = tiny_spec("big")
    spec["trainer_config"]["padding"] = "x" * (limit + 1)
    r = sqlite_client.post("/api/v1/studies", json=spec)
    assert r.status_code == 413
    assert f"exceeds the limit of {limit} bytes" in r.json()["detail"][0]["msg"]


def test_streamed_body_over_the_limit_is_413(sqlite_client: TestClient) -> None:
    limit = sqlite_client.app.state.settings.max_body_bytes  # type: ignore[attr-defined]

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit applies while streaming
        yield b'{"name": "'
        for _ in range(limit // 10_000 + 2):
            yield b"x" * 10_000
        yield b'"}'

    r = sqlite_client.post(
        "/api/v1/studies", content=chunks(), headers={"content-type": "application/json"}
    )
    assert r.status_code == 413


def test_a_timeout_that_is_not_a_finite_number_is_422_at_the_field(
    sqlite_client: TestClient,
) -> None:
    body = json.dumps(tiny_spec("bad", budget={"n_trials": 2, "timeout_s": float("nan")}))
    r = sqlite_client.post(
        "/api/v1/studies", content=body, headers={"content-type": "application/json"}
    )
    assert r.status_code == 422, r.text
    (detail,) = r.json()["detail"]
    assert detail["loc"] == ["body", "budget", "timeout_s"]
    assert "finite number" in detail["msg"]  # before: "less than or equal to 2592000"


def test_an_enqueued_point_on_the_step_grid_is_accepted(sqlite_client: TestClient) -> None:
    space = {"dropout": {"low": 0.0, "high": 0.5, "step": 0.1}, "patience": {"fixed": 10}}
    spec = tiny_spec("on-grid", search_space=space, enqueue=[{"dropout": 0.3}])
    assert sqlite_client.post("/api/v1/studies", json=spec).status_code == 201
