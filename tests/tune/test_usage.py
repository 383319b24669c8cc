"""Usage errors exit 2 before anything runs; a server that is not there exits 4."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support import free_port
from tests.tune.conftest import tiny_spec, tune_in_process, write_spec


def test_invalid_spec_exits_2_naming_the_field_and_rule(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = tiny_spec(search_space={"dropout": {"low": 0.0, "high": 1.5}})
    spec = write_spec(tmp_path / "spec.yaml", bad)
    result = tune_in_process(tmp_path, str(spec), monkeypatch=monkeypatch)
    assert result.returncode == 2
    assert result.stderr.startswith("error: invalid spec")
    assert "dropout.high must be < 1" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--max-regression", "0.1"], "--max-regression needs --baseline"),
        (["--baseline", "missing.json"], "--baseline missing.json: cannot read it"),
        (["--warm-start", "spec.yaml"], "--warm-start spec.yaml: not valid JSON"),
        (["--local", "--server", "http://127.0.0.1:1"], "--local and --server exclude"),
        (["--min-score", "2", "--max-score", "1"], "no result can pass"),
        # found before the study runs (was: after it, replacing the verdict)
        (["-o", "no/such/out.json"], "--output no/such/out.json: folder 'no/such' is missing"),
        (["--summary", "gone/s.md"], "--summary gone/s.md: folder 'gone' is missing"),
    ],
)
def test_bad_options_exit_2(
    tmp_path: Path, args: list[str], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = write_spec(tmp_path / "spec.yaml", tiny_spec())
    result = tune_in_process(tmp_path, str(spec), *args, monkeypatch=monkeypatch)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr


def test_baseline_of_another_metric_exits_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = {"schema_version": 1, "study_name": "x", "metric": "val_acc",
             "direction": "maximize", "best_value": 0.9, "best_params": {}}  # fmt: skip
    (tmp_path / "base.json").write_text(json.dumps(other))
    spec = write_spec(tmp_path / "spec.yaml", tiny_spec())
    result = tune_in_process(
        tmp_path, str(spec), "--baseline", "base.json", monkeypatch=monkeypatch
    )
    assert result.returncode == 2
    assert "it optimized val_acc (maximize) but this study optimizes val_loss" in result.stderr


def test_unreachable_server_exits_4(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = write_spec(tmp_path / "spec.yaml", tiny_spec())
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    result = tune_in_process(tmp_path, str(spec), "--server", url, monkeypatch=monkeypatch)
    assert result.returncode == 4
    assert f"cannot reach the regtune server at {url}" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_server_url_setting_selects_server_mode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = write_spec(tmp_path / "spec.yaml", tiny_spec())
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    (tmp_path / ".env").write_text(f"REGTUNE_SERVER_URL={url}\n")  # read like every setting
    result = tune_in_process(tmp_path, str(spec), monkeypatch=monkeypatch)
    assert result.returncode == 4
    assert f"cannot reach the regtune server at {url}" in result.stderr
