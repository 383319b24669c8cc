"""Hostile study specs against a real `regtune serve` (SQLite and PostgreSQL): issue 15, 4-6, 11-12.

Every refused spec answers 422 with a JSON body whose `loc` and `msg` name the field and the
rule; none leaves a regtune study or an Optuna study behind; `/healthz` keeps answering while a
big spec is checked. Numbers that JSON parsers read as non-finite (``NaN``, ``Infinity``,
``1e400``) or that overflow a float are sent as raw JSON text, as a hostile client would.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import optuna
import pytest

from service.db import normalize_url
from service.migrations import upgrade
from service.spec import (
    MAX_ENQUEUE,
    MAX_GRID_POINTS,
    SpecFileError,
    load_spec_file,
)
from tests.conftest import postgres_database
from tests.reliability._processes import server
from tests.support import tiny_spec
from trainers.space import MAX_CHOICES

HOLE = "__HOSTILE__"
NON_FINITE = ["NaN", "Infinity", "-Infinity", "1e400", "1" + "0" * 400]


@contextmanager
def _database(kind: str, tmp: Path) -> Iterator[str]:
    """A fresh, migrated database for the module (SQLite file, or a PostgreSQL database)."""
    if kind == "sqlite":
        url = f"sqlite:///{tmp}/hostile.db"
        upgrade(url)
        yield url
        return
    with postgres_database() as url:
        upgrade(url)
        yield url


class Api:
    """A running server and its database."""

    def __init__(self, base: str, url: str) -> None:
        self.base = base
        self.url = url
        self.client = httpx.Client(base_url=base, timeout=60)
        # one storage (one pool) for the module: a storage per call, as `get_all_study_names(url)`
        # makes, holds its connections until the garbage collector finds it, and a module of
        # checks on PostgreSQL ran the server out of connections
        self.storage = optuna.storages.RDBStorage(normalize_url(url), skip_table_creation=True)

    def close(self) -> None:
        self.client.close()
        self.storage.remove_session()
        self.storage.engine.dispose()

    def submit_raw(self, body: str) -> httpx.Response:
        return self.client.post(
            "/api/v1/studies", content=body, headers={"Content-Type": "application/json"}
        )

    def optuna_names(self) -> set[str]:
        return set(optuna.study.get_all_study_names(self.storage))

    def refused(self, body: str, name: str) -> list[dict[str, Any]]:
        """Submit `body`; assert a 422 with JSON details and nothing stored; the details."""
        before = self.optuna_names()
        r = self.submit_raw(body)
        assert r.status_code == 422, r.text[:2000]
        assert r.headers["content-type"].startswith("application/json")
        details: list[dict[str, Any]] = r.json()["detail"]
        assert details and all({"loc", "msg", "type"} <= set(d) for d in details)
        assert self.client.get(f"/api/v1/studies/{name}").status_code == 404
        assert self.optuna_names() == before  # no orphaned Optuna study
        return details


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def api(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    with (
        _database(request.param, tmp_path_factory.mktemp("hostile")) as url,
        server(url) as base,
    ):
        api = Api(base, url)
        try:
            yield api
        finally:
            api.close()


def _name() -> str:
    return f"hostile-{uuid.uuid4().hex[:10]}"


def _with_token(spec: dict[str, Any], token: str) -> str:
    """`spec` as JSON text with the placeholder replaced by a raw JSON number token."""
    return json.dumps(spec).replace(f'"{HOLE}"', token)


def _spec(name: str, path: str) -> dict[str, Any]:
    """A valid spec with `HOLE` put at the dotted `path` (list indices as digits)."""
    spec = tiny_spec(name)
    spec["search_space"]["patience"] = {"fixed": 10}
    spec["enqueue"] = [{"dropout": 0.1}]
    keys = path.split(".")
    node: Any = spec
    for key in keys[:-1]:
        node = node[int(key)] if isinstance(node, list) else node.setdefault(key, {})
    last = keys[-1]
    if isinstance(node, list):
        node[int(last)] = HOLE
    else:
        node[last] = HOLE
    return spec


# dotted path of the number -> the `loc` the 422 must point at (after "body")
NUMBER_FIELDS: dict[str, list[str | int]] = {
    "search_space.patience.fixed": ["search_space", "patience", "fixed"],
    "search_space.batch_size.choices.1": ["search_space", "batch_size", "choices", 1],
    "search_space.dropout.low": ["search_space", "dropout", "low"],
    "search_space.dropout.high": ["search_space", "dropout", "high"],
    "search_space.dropout.step": ["search_space", "dropout", "step"],
    "enqueue.0.dropout": ["enqueue", 0, "dropout"],
    "budget.timeout_s": ["budget", "timeout_s"],
    "sampler.options.n_startup_trials": ["sampler", "options"],
    "pruner.options.deep.list": ["pruner", "options"],
    "trainer_config.class_sep": ["trainer_config"],
}


@pytest.mark.parametrize("token", NON_FINITE)
@pytest.mark.parametrize("path", sorted(NUMBER_FIELDS))
def test_a_non_finite_or_overflowing_number_is_a_422_at_its_field(
    api: Api, path: str, token: str
) -> None:
    name = _name()
    details = api.refused(_with_token(_spec(name, path), token), name)
    expected = ["body", *NUMBER_FIELDS[path]]
    assert any(d["loc"][: len(expected)] == expected for d in details), details
    field = ".".join(str(p) for p in NUMBER_FIELDS[path])
    assert any(field in d["msg"] for d in details), details


def test_a_non_finite_float_choice_of_a_float_parameter_is_refused(api: Api) -> None:
    """Was stored with a bare NaN token (SQLite) or a 500 (PostgreSQL)."""
    name = _name()
    spec = tiny_spec(name)
    spec["search_space"]["weight_decay"] = {"choices": [0.1, HOLE]}
    details = api.refused(_with_token(spec, "NaN"), name)
    assert details[0]["loc"] == ["body", "search_space", "weight_decay", "choices", 1]
    assert details[0]["type"] == "finite_number"


def test_deeply_nested_options_are_refused_naming_the_depth_limit(api: Api) -> None:
    name = _name()
    deep: dict[str, Any] = {}
    node = deep
    for _ in range(500):
        node["a"] = {}
        node = node["a"]
    (detail,) = api.refused(
        json.dumps(tiny_spec(name, sampler={"name": "tpe", "options": deep})), name
    )
    assert detail["loc"] == ["body", "sampler", "options"]
    assert "nested deeper than 16 levels" in detail["msg"]


def test_a_huge_free_form_mapping_is_refused_naming_the_size_limit(api: Api) -> None:
    name = _name()
    spec = tiny_spec(name)
    spec["trainer_config"] = {**spec["trainer_config"], "junk": list(range(20_000))}
    (detail,) = api.refused(json.dumps(spec), name)
    assert detail["loc"] == ["body", "trainer_config"]
    assert "more than 10000 values" in detail["msg"]


def test_a_grid_past_the_limit_is_refused_naming_its_size(api: Api) -> None:
    """The 1.8 KB spec of 4.1e9 grid points that stalled every worker."""
    name = _name()
    space = {
        p: {"choices": [i / 100 for i in range(40)]}
        for p in ("weight_decay", "l1", "dropout", "label_smoothing")
    }
    space["batch_size"] = {"choices": list(range(1, 41))}
    space["patience"] = {"choices": list(range(40))}
    spec = tiny_spec(name, search_space=space, sampler={"name": "grid"})
    (detail,) = api.refused(json.dumps(spec), name)
    assert detail["loc"] == ["body", "sampler", "name"]
    assert "4,096,000,000 grid points" in detail["msg"]
    assert f"{MAX_GRID_POINTS:,}" in detail["msg"]


def test_a_grid_within_the_limit_is_accepted(api: Api) -> None:
    name = _name()
    space = {"batch_size": {"choices": [16, 32]}, "dropout": {"choices": [0.0, 0.1, 0.2]}}
    spec = tiny_spec(name, search_space=space, sampler={"name": "grid"})
    r = api.client.post("/api/v1/studies", json=spec)
    assert r.status_code == 201, r.text


def test_too_many_choices_or_enqueued_points_are_refused_naming_the_limit(api: Api) -> None:
    name = _name()
    spec = tiny_spec(name)
    spec["search_space"]["batch_size"] = {"choices": list(range(1, MAX_CHOICES + 2))}
    (detail,) = api.refused(json.dumps(spec), name)
    assert detail["loc"] == ["body", "search_space", "batch_size", "choices"]
    assert str(MAX_CHOICES) in detail["msg"]

    spec = tiny_spec(name)
    spec["enqueue"] = [{"dropout": 0.1}] * (MAX_ENQUEUE + 1)
    (detail,) = api.refused(json.dumps(spec), name)
    assert detail["loc"] == ["body", "enqueue"]
    assert str(MAX_ENQUEUE) in detail["msg"]


@pytest.mark.parametrize(
    ("field", "options", "loc", "words"),
    [
        ("sampler", {"n_ei_candidates": 10**9}, ["n_ei_candidates"], "limit 10000"),
        ("sampler", {"bogus": 1}, [], "bogus"),
        ("pruner", {"n_startup_trials": -3}, [], "n_startup_trials"),
        ("pruner", {"no_such_option": True}, [], "no_such_option"),
    ],
)
def test_sampler_and_pruner_options_are_checked_at_submit(
    api: Api, field: str, options: dict[str, Any], loc: list[str], words: str
) -> None:
    name = _name()
    spec = tiny_spec(name)
    spec[field] = {"name": "tpe" if field == "sampler" else "median", "options": options}
    (detail,) = api.refused(json.dumps(spec), name)
    assert detail["loc"] == ["body", field, "options", *loc]
    assert detail["msg"].startswith(f"{field}.options")
    assert words in detail["msg"]


@pytest.mark.parametrize(
    ("config", "words"),
    [
        ({"hidden_sizes": [65_536] * 16}, "hidden_sizes: the network would have"),
        ({"n_samples": 10_000_000, "n_features": 10_000}, "n_samples: n_samples x n_features"),
        ({"seed": 2**40}, "seed"),
    ],
)
def test_a_builtin_trainer_may_not_allocate_without_bound(
    api: Api, config: dict[str, Any], words: str
) -> None:
    name = _name()
    spec = tiny_spec(name)
    spec["trainer_config"] = {**spec["trainer_config"], **config}
    details = api.refused(json.dumps(spec), name)
    assert details[0]["loc"][:2] == ["body", "trainer_config"]
    assert words in details[0]["msg"]


@pytest.mark.parametrize("route", ["", "/trials", "/trials/0", "/best", "/plots"])
def test_a_nul_byte_in_the_study_path_is_a_json_404(api: Api, route: str) -> None:
    """PostgreSQL refuses NUL in a query parameter (DataError): was a plain-text 500."""
    r = api.client.get(f"/api/v1/studies/a%00b{route}")
    assert r.status_code == 404, r.text
    assert r.json()["detail"][0]["loc"] == ["path", "study"]
    r = api.client.post("/api/v1/studies/a%00b/cancel")
    assert r.status_code == 404, r.text


def test_a_nul_character_in_a_spec_string_is_refused(api: Api) -> None:
    name = _name()
    spec = tiny_spec(name)
    spec["trainer_config"] = {**spec["trainer_config"], "note": "a\x00b"}
    (detail,) = api.refused(json.dumps(spec), name)
    assert detail["loc"] == ["body", "trainer_config"]
    assert "NUL" in detail["msg"]


def test_healthz_answers_while_a_big_spec_is_checked(api: Api) -> None:
    """A ~0.5 MB spec (was 8 s of event-loop time, /healthz held 5.5 s) and an accepted big one."""
    name = _name()
    big = tiny_spec(name)
    big["search_space"] = {
        p: {"choices": [round(i * 1e-6, 9) for i in range(1, 20_001)]}
        for p in ("weight_decay", "l1", "dropout", "label_smoothing")
    }
    body = json.dumps(big)
    assert len(body) > 400_000
    accepted = tiny_spec(_name())
    accepted["search_space"] = {
        p: {"choices": [round(i * 1e-4, 6) for i in range(MAX_CHOICES)]}
        for p in ("weight_decay", "l1", "dropout", "label_smoothing")
    }
    accepted["enqueue"] = [{"dropout": 0.0999, "l1": 0.0001}] * 20

    answers: dict[str, httpx.Response] = {}

    def submit() -> None:
        answers["big"] = api.submit_raw(body)
        answers["accepted"] = api.client.post("/api/v1/studies", json=accepted)

    thread = threading.Thread(target=submit)
    thread.start()
    health = []
    while thread.is_alive():
        health.append(httpx.get(f"{api.base}/healthz", timeout=30).status_code)
    thread.join()
    assert health and set(health) == {200}
    assert answers["big"].status_code == 422
    details = answers["big"].json()["detail"]
    assert len(details) == 4  # one per parameter, each naming the limit
    assert all(d["loc"][-1] == "choices" and str(MAX_CHOICES) in d["msg"] for d in details)
    assert answers["accepted"].status_code == 201, answers["accepted"].text


# --- YAML ------------------------------------------------------------------------------------

ALIAS_BOMB = "\n".join(
    ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    + [
        f"{c}: &{c} [{', '.join([f'*{p}'] * 10)}]"
        for p, c in zip("abcdefgh", "bcdefghi", strict=True)
    ]
)


def _parse_spec(api: Api, text_: str) -> httpx.Response:
    # the editor sends its text as a JSON string (writes must be JSON)
    return api.client.post("/dashboard-api/parse-spec", json=text_)


@pytest.mark.parametrize(
    ("yaml_text", "words"),
    [
        (ALIAS_BOMB, "aliases"),
        ("a: &a [*a]\n", "aliases"),
        ("name: x\nsearch_space: {dropout: {fixed: .nan}}\n", "non-finite number"),
        ("name: x\ncreated: 2024-01-01\n", "JSON cannot represent"),
        ("a: " + "[" * 40 + "]" * 40 + "\n", "nested deeper"),
        ("a: !!float abc\n", "cannot be read"),
        ("- just\n- a list\n", "must be a mapping"),
    ],
)
def test_yaml_the_editor_parses_is_refused_before_it_expands(
    api: Api, yaml_text: str, words: str
) -> None:
    r = _parse_spec(api, yaml_text)
    assert r.status_code == 422, r.text[:500]
    (detail,) = r.json()["detail"]
    assert detail["loc"] == ["body"]
    assert words in detail["msg"]
    assert httpx.get(f"{api.base}/healthz", timeout=10).status_code == 200


def test_a_spec_file_with_aliases_is_refused_by_the_cli_loader(tmp_path: Path) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text(ALIAS_BOMB)
    with pytest.raises(SpecFileError, match=r"line 2, column \d+: YAML aliases"):
        load_spec_file(path)
