"""Hostile input: trainer names are registry keys, never imports; schemathesis over the real API."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import optuna
import pytest
import schemathesis
from fastapi.testclient import TestClient
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from service.app import create_app
from service.auth import TokenScope, create_token
from service.config import Settings
from service.db import make_engine, make_session_factory, unit_of_work
from service.migrations import upgrade
from tests.api.conftest import run_worker_until_idle
from tests.reliability._processes import REPO, server
from tests.support import tiny_spec

CANARY = "tests.reliability.canary"


@pytest.mark.parametrize(
    "trainer",
    [
        "os:system",
        "os.system",
        "trainers.builtin",
        "trainers.builtin:SYNTHETIC_MLP",
        CANARY,
        f"{CANARY}:TRAINER",
        "__import__('os').system('true')",
    ],
)
def test_a_trainer_name_is_looked_up_never_imported(sqlite_url: str, trainer: str) -> None:
    upgrade(sqlite_url)
    sys.modules.pop(CANARY, None)
    with TestClient(create_app(Settings(database_url=sqlite_url, auto_migrate=False))) as c:
        before = set(sys.modules)  # the registered plugins are loaded by now
        r = c.post("/api/v1/studies", json=tiny_spec("hostile", trainer=trainer))
        new_modules = set(sys.modules) - before
    assert r.status_code == 422
    (detail,) = r.json()["detail"]
    assert detail["loc"] == ["body", "trainer"]
    assert detail["msg"].startswith(f"trainer: unknown trainer {trainer!r}; registered trainers:")
    assert CANARY not in sys.modules
    assert not {m for m in new_modules if m.split(".")[0] in ("os", "trainers", "tests")}


def _token(url: str) -> str:
    engine = make_engine(url)
    with unit_of_work(make_session_factory(engine)) as session:
        _, secret = create_token(session, "schemathesis", TokenScope.write)
    engine.dispose()
    return secret


@pytest.mark.slow
def test_schemathesis_finds_no_server_error_and_no_schema_violation(
    sqlite_url: str, tmp_path: Path
) -> None:
    """>= 1000 generated requests over every operation of /openapi.json, auth on, write token.

    Checks: everything except `positive_data_acceptance` (the schema cannot express the
    semantic rules a valid spec must also meet, e.g. a *registered* trainer, low < high) and
    `allow_header_conformance` (Starlette answers a 405 with the methods of the first route
    matching the path, not all of them).
    """
    upgrade(sqlite_url)
    token = _token(sqlite_url)
    # a finished study with trials and epochs, so reads reach real data, not only 404s
    with TestClient(create_app(Settings(database_url=sqlite_url, auto_migrate=False))) as c:
        created = c.post(
            "/api/v1/studies",
            json=tiny_spec("seed", n_trials=2),
            headers={"Authorization": f"Bearer {token}"},
        )
    run_worker_until_idle(sqlite_url, created.json()["id"])

    report = tmp_path / "report"
    with server(sqlite_url, REGTUNE_AUTH="on") as base:
        run = subprocess.run(
            [
                str(Path(sys.executable).parent / "st"),
                "run",
                f"{base}/openapi.json",
                "--header",
                f"Authorization: Bearer {token}",
                "--checks",
                "all",
                "--exclude-checks",
                "positive_data_acceptance,allow_header_conformance",
                "--max-examples",
                "60",
                "--seed",
                "20261122",
                # one worker: with two threads, hypothesis' lambda-source parsing (ast.parse) can
                # race inside CPython 3.11 ("AST constructor recursion depth mismatch")
                "--workers",
                "1",
                "--request-timeout",
                "60",
                "--no-color",
                "--report",
                "json",
                "--report-dir",
                str(report),
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=600,
        )
    reports = list(report.glob("*.json"))
    assert len(reports) == 1, run.stdout[-6000:] + run.stderr[-3000:]
    result = json.loads(reports[0].read_text())
    assert result["failures"] == [] and result["errors"] == [], run.stdout[-6000:]
    assert run.returncode == 0, run.stdout[-6000:]
    assert result["operations"]["tested"] == result["operations"]["total"] >= 10
    assert result["test_cases"]["generated"] >= 1000


# --- hostile cases through schemathesis (issue 15): non-finite numbers, huge lists, NUL bytes ---

HOSTILE_NUMBERS = ("NaN", "Infinity", "-Infinity", "1e400", "1" + "0" * 400)
_HOLE = "__HOSTILE__"


def _leaves(
    doc: Any, path: tuple[str | int, ...] = ()
) -> Iterator[tuple[tuple[str | int, ...], Any]]:
    """Every scalar of a JSON document with its path."""
    if isinstance(doc, dict):
        for key, value in doc.items():
            yield from _leaves(value, (*path, key))
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            yield from _leaves(value, (*path, i))
    else:
        yield path, doc


def _replaced(doc: Any, path: tuple[str | int, ...], value: Any) -> Any:
    out = copy.deepcopy(doc)
    node = out
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return out


def _hostile_spec_bodies() -> Iterator[bytes]:
    """Raw JSON bodies for POST /api/v1/studies, each hostile in one place."""
    base = tiny_spec("st-hostile")
    base["sampler"] = {"name": "tpe", "seed": 1, "options": {"n_startup_trials": 3}}
    base["pruner"] = {"name": "median", "options": {"n_warmup_steps": 1}}
    base["budget"] = {"n_trials": 3, "timeout_s": 60.0}
    base["enqueue"] = [{"dropout": 0.1}]
    for path, value in _leaves(base):
        if isinstance(value, bool):
            continue
        if isinstance(value, int | float):
            text = json.dumps(_replaced(base, path, _HOLE))
            for token in HOSTILE_NUMBERS:
                yield text.replace(f'"{_HOLE}"', token).encode()
        elif isinstance(value, str):
            yield json.dumps(_replaced(base, path, value + "\x00")).encode()
    huge = _replaced(
        base, ("search_space", "dropout"), {"choices": [i / 1e6 for i in range(50_000)]}
    )
    yield json.dumps(huge).encode()
    grid = _replaced(base, ("sampler",), {"name": "grid"})
    grid["search_space"] = {
        p: {"choices": list(range(1, 41))} for p in ("batch_size", "patience")
    } | {p: {"choices": [i / 100 for i in range(40)]} for p in ("dropout", "l1", "weight_decay")}
    yield json.dumps(grid).encode()
    deep: dict[str, Any] = {}
    node = deep
    for _ in range(400):
        node["a"] = {}
        node = node["a"]
    yield json.dumps(_replaced(base, ("sampler", "options"), deep)).encode()
    yield json.dumps(_replaced(base, ("enqueue",), [{"dropout": 0.1}] * 5_000)).encode()


HOSTILE_REFS = ("a\x00b", "\x00", "1\x00", "x" * 129, "NaN", "1e400", "-1", "9" * 400)
HOSTILE_QUERY = ("NaN", "Infinity", "1e400", "9" * 400, "\x00", "-1")


def _assert_json_error(response: Any) -> None:
    if response.status_code >= 400:
        value = response.headers.get("content-type") or [""]  # schemathesis: name -> values
        content_type = value[0] if isinstance(value, list) else value
        assert content_type.startswith("application/json"), (
            response.status_code,
            response.text[:300],
        )
        detail = json.loads(response.text)["detail"]
        assert detail and all({"loc", "msg", "type"} <= set(d) for d in detail)


def test_schemathesis_hostile_cases_get_no_server_error_and_json_errors(
    migrated_db_url: str,
) -> None:
    """Hand-made hostile cases on top of the generated run, on SQLite and PostgreSQL.

    Every operation of /openapi.json gets non-finite and overflowing numbers, NUL bytes and
    oversized values in its path and query parameters; POST /api/v1/studies gets a valid spec
    made hostile at each of its numbers and strings in turn, plus huge choices, a grid bomb,
    deep options and a huge enqueue. schemathesis' response checks apply to each answer (no
    5xx, documented status and content type, body matching the schema), and every error body
    is the JSON error shape. Nothing refused is stored.
    """
    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
    ]
    sent = 0
    with server(migrated_db_url) as base:
        schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
        paths = httpx.get(f"{base}/openapi.json", timeout=30).json()["paths"]
        operation = schema["/api/v1/studies"]["POST"]
        for body in _hostile_spec_bodies():
            case = operation.Case(body=body, media_type="application/json")
            response = case.call(base_url=base)
            case.validate_response(response, checks=checks)
            _assert_json_error(response)
            assert response.status_code == 422, response.text[:300]
            sent += 1
        for path, methods in paths.items():
            for method, spec in methods.items():
                params = spec.get("parameters", [])
                path_params = {p["name"] for p in params if p["in"] == "path"}
                query_params = [p["name"] for p in params if p["in"] == "query"]
                operation = schema[path][method.upper()]
                valid = {name: "1" for name in path_params}
                cases = [
                    operation.Case(path_parameters={**valid, name: ref})
                    for name in path_params
                    for ref in HOSTILE_REFS
                ] + [
                    operation.Case(path_parameters=valid, query={name: value})
                    for name in query_params
                    for value in HOSTILE_QUERY
                ]
                for case in cases:
                    if method.upper() in ("POST", "PUT", "PATCH") and path != "/api/v1/studies":
                        case.media_type = "application/json"
                    response = case.call(base_url=base)
                    case.validate_response(response, checks=checks)
                    _assert_json_error(response)
                    sent += 1
        studies = httpx.get(f"{base}/api/v1/studies", timeout=30).json()
    assert studies["total"] == 0
    assert optuna.study.get_all_study_names(migrated_db_url) == []
    assert sent > 150
