"""`regtune token ...` and the CLI client against a real `regtune serve` with auth on."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from tests.reliability._processes import run_cli, server
from tests.support import tiny_spec

pytestmark = pytest.mark.slow


def _create(url: str, name: str, scope: str) -> str:
    result = run_cli(url, "token", "create", "--name", name, "--scope", scope)
    assert result.returncode == 0, result.stderr
    assert "not shown again" in result.stderr
    return result.stdout.strip()


def test_tokens_from_the_cli_guard_a_real_server(sqlite_url: str, tmp_path: Path) -> None:
    writer = _create(sqlite_url, "ci", "write")
    reader = _create(sqlite_url, "dash", "read")
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(tiny_spec("cli-auth")))

    with server(sqlite_url, REGTUNE_AUTH="on") as base:
        no_token = run_cli(sqlite_url, "submit", str(spec), "--server", base)
        assert no_token.returncode == 1
        assert "HTTP 401: authentication required" in no_token.stderr

        as_reader = run_cli(sqlite_url, "submit", str(spec), "--server", base, "--token", reader)
        assert as_reader.returncode == 1
        assert "needs a 'write' token" in as_reader.stderr

        submitted = run_cli(
            sqlite_url, "submit", str(spec), "--server", base, "--format", "json",
            REGTUNE_TOKEN=writer,
        )  # fmt: skip
        assert submitted.returncode == 0, submitted.stderr
        study_id = json.loads(submitted.stdout)["id"]

        status = run_cli(sqlite_url, "status", str(study_id), "--server", base, "--token", reader)
        assert status.returncode == 0 and "'cli-auth'" in status.stdout

        listed = run_cli(sqlite_url, "token", "list", "--json")
        used = {t["name"]: t["last_used_at"] for t in json.loads(listed.stdout)}
        assert used["ci"] is not None and used["dash"] is not None

        revoked = run_cli(sqlite_url, "token", "revoke", "ci")
        assert revoked.returncode == 0 and "revoked token 'ci'" in revoked.stdout
        response = httpx.get(
            f"{base}/api/v1/studies", headers={"Authorization": f"Bearer {writer}"}
        )
        assert response.status_code == 401
        assert response.json()["detail"][0]["msg"] == "token 'ci' was revoked"


def test_token_cli_errors_are_one_line(sqlite_url: str) -> None:
    _create(sqlite_url, "ci", "write")
    again = run_cli(sqlite_url, "token", "create", "--name", "ci")
    assert again.returncode == 1 and again.stderr.strip() == (
        "error: a token named 'ci' already exists"
    )
    bad = run_cli(sqlite_url, "token", "create", "--name", "no spaces")
    assert bad.returncode == 1 and bad.stderr.startswith("error: --name: name must be")
    missing = run_cli(sqlite_url, "token", "revoke", "nobody")
    assert missing.returncode == 1 and missing.stderr.strip() == "error: no token named 'nobody'"
