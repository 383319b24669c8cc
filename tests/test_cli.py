"""The `regtune` CLI: client commands against a real API server, and its error messages."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, inspect
from typer.testing import CliRunner

from service.app import create_app
from service.cli import app
from service.config import Settings
from service.presets import list_presets
from tests.support import free_port, serve_in_thread

runner = CliRunner()
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture
def api(sqlite_url: str) -> Iterator[str]:
    """The real app under uvicorn in a thread (no worker: studies stay queued)."""
    settings = Settings(database_url=sqlite_url, auto_migrate=True)
    with serve_in_thread(create_app(settings)) as url:
        yield url


def test_submit_status_cancel_through_the_api(api: str) -> None:
    submitted = runner.invoke(
        app, ["submit", str(EXAMPLES / "quick.yaml"), "--server", api, "--format", "json"]
    )
    assert submitted.exit_code == 0, submitted.output
    study = json.loads(submitted.stdout)
    assert study["status"] == "queued" and study["name"] == "quick"

    status = runner.invoke(app, ["status", str(study["id"]), "--server", api])
    assert status.exit_code == 0, status.output
    assert f"study {study['id']} 'quick' (synthetic-mlp): queued" in status.stdout
    assert "0/10 finished" in status.stdout

    by_name = runner.invoke(app, ["status", "quick", "--server", api, "--format", "json"])
    assert by_name.exit_code == 0, by_name.output  # a name works where an id does (the API's)
    assert json.loads(by_name.stdout)["id"] == study["id"]

    cancelled = runner.invoke(app, ["cancel", "quick", "--server", api])
    assert cancelled.exit_code == 0, cancelled.output
    assert "cancelled" in cancelled.stdout
    assert httpx.get(f"{api}/api/v1/studies/{study['id']}").json()["status"] == "cancelled"


def test_invalid_spec_gets_the_servers_reason_on_one_line(api: str, tmp_path: Path) -> None:
    spec = tmp_path / "bad.json"
    spec.write_text(
        json.dumps(
            {
                "name": "bad",
                "trainer": "digits-mlp",
                "search_space": {"dropout": {"low": 0.1, "high": 1.5}},
            }
        )
    )
    result = runner.invoke(app, ["submit", str(spec), "--server", api])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: HTTP 422")
    assert "dropout" in result.stderr
    assert "Traceback" not in result.output


def test_unknown_study_is_a_404_line(api: str) -> None:
    result = runner.invoke(app, ["best", "999", "--server", api])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: HTTP 404")


def test_unreachable_server_is_one_clear_line() -> None:
    server = f"http://127.0.0.1:{free_port()}"
    result = runner.invoke(app, ["status", "1", "--server", server])
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        f"error: cannot reach the regtune server at {server} (ConnectError); "
        "is `regtune serve` running? (set --server or REGTUNE_SERVER_URL)"
    ]


def test_unreadable_spec_file_names_the_file(tmp_path: Path) -> None:
    result = runner.invoke(app, ["submit", str(tmp_path / "missing.yaml")])
    assert result.exit_code == 1
    assert "missing.yaml" in result.stderr and "Traceback" not in result.output


def test_presets_lists_each_preset_with_pasteable_parameters() -> None:
    text = runner.invoke(app, ["presets"])
    assert text.exit_code == 0, text.output
    assert text.stdout.startswith("standard: ")
    assert "  weight_decay:    {low: 1.0e-06, high: 0.1, log: true}" in text.stdout
    for name in ("sparse", "fine-tune", "wide"):
        assert f"\n{name}: " in text.stdout
    as_json = runner.invoke(app, ["presets", "--format", "json"])
    assert as_json.exit_code == 0, as_json.output
    presets = json.loads(as_json.stdout)  # the same list as GET /api/v1/presets
    assert presets == [p.model_dump(mode="json") for p in list_presets()]


def test_db_upgrade_creates_the_schema(sqlite_url: str) -> None:
    result = runner.invoke(app, ["db", "upgrade", "--database-url", sqlite_url])
    assert result.exit_code == 0, result.output
    tables = set(inspect(create_engine(sqlite_url)).get_table_names())
    assert {"regtune_studies", "regtune_trials", "trials"} <= tables


def test_worker_refuses_a_bad_devices_list(sqlite_url: str) -> None:
    result = runner.invoke(app, ["worker", "--devices", "0,zero", "--database-url", sqlite_url])
    assert result.exit_code == 1
    assert "--devices must be 'auto', 'cpu' or GPU indices" in result.stderr


def test_worker_refuses_an_unknown_accelerator_or_study_before_claiming(sqlite_url: str) -> None:
    """Before, `--accelerator gpux` claimed trials and failed them until someone's study
    failed, and `--study 999` idled or exited 0 having done nothing."""
    assert runner.invoke(app, ["db", "upgrade", "--database-url", sqlite_url]).exit_code == 0
    db = ["--database-url", sqlite_url, "--exit-when-idle"]
    typo = runner.invoke(app, ["worker", "--accelerator", "gpux", *db])
    assert typo.exit_code == 1
    assert typo.stderr.strip() == "error: --accelerator 'gpux': use one of cpu, gpu, auto"
    missing = runner.invoke(app, ["worker", "--study", "999", *db])
    assert missing.exit_code == 1
    assert missing.stderr.strip() == "error: --study 999: no such study"


@pytest.mark.parametrize(
    ("option", "value", "text"),
    [
        ("--server", "http://127.0.0.1:8765x", "is not valid"),
        ("--token", "rgt_\u00e9", "holds characters no regtune token has"),
    ],
)
def test_a_server_url_or_token_no_request_can_carry_is_one_line(
    option: str, value: str, text: str
) -> None:
    value = value.encode().decode("unicode_escape")
    result = runner.invoke(app, ["status", "1", option, value])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ") and text in result.stderr
    assert "Traceback" not in result.output


def test_token_commands_on_a_database_that_cannot_open_are_one_line(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'missing-dir' / 'regtune.db'}"
    result = runner.invoke(app, ["token", "list", "--database-url", url])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: cannot open the database (OperationalError)")


def test_serve_on_a_port_in_use_is_one_line_before_any_worker_starts(sqlite_url: str) -> None:
    """Before: uvicorn's log line and exit 3, after the workers had been started."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = runner.invoke(
            app, ["serve", "--port", str(port), "--workers", "1", "--database-url", sqlite_url]
        )
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        f"error: --port {port}: cannot listen on 127.0.0.1:{port} (Address already in use)"
    )


def test_serve_on_an_address_of_no_interface_blames_the_host(sqlite_url: str) -> None:
    """Was "--port 8799: cannot listen ..." when the port was free and the host was wrong."""
    port = free_port()
    args = ["serve", "--host", "192.0.2.1", "--port", str(port), "--workers", "0"]
    result = runner.invoke(app, [*args, "--database-url", sqlite_url])
    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: --host 192.0.2.1: cannot listen on 192.0.2.1:{port}")


def test_worker_once_exits_when_there_is_no_work(sqlite_url: str) -> None:
    assert runner.invoke(app, ["db", "upgrade", "--database-url", sqlite_url]).exit_code == 0
    result = runner.invoke(app, ["worker", "--once", "--database-url", sqlite_url])
    assert result.exit_code == 0, result.output


def test_token_commands_take_format_json_like_every_other_command(sqlite_url: str) -> None:
    assert runner.invoke(app, ["db", "upgrade", "--database-url", sqlite_url]).exit_code == 0
    db = ["--database-url", sqlite_url]
    created = runner.invoke(app, ["token", "create", "--name", "ci", "--format", "json", *db])
    assert created.exit_code == 0, created.output
    token = json.loads(created.stdout)
    assert token["name"] == "ci" and token["token"]
    listed = runner.invoke(app, ["token", "list", "--format", "json", *db])
    alias = runner.invoke(app, ["token", "list", "--json", *db])  # the former spelling
    assert json.loads(listed.stdout) == json.loads(alias.stdout)
    assert [t["name"] for t in json.loads(listed.stdout)] == ["ci"]
    assert "--json" not in runner.invoke(app, ["token", "list", "--help"]).stdout


def test_help_names_the_environment_variables() -> None:
    """Rich read "[env: REGTUNE_SERVER_URL]" as markup and dropped it from every --help."""
    for command in (["status"], ["submit"], ["db", "upgrade"]):
        shown = CliRunner().invoke(app, [*command, "--help"], terminal_width=200).stdout
        env = "REGTUNE_DATABASE_URL" if command[0] == "db" else "REGTUNE_SERVER_URL"
        assert f"[env: {env}]" in shown, command
