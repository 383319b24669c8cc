"""`regtune tune --local`: real worker processes on an SQLite file, real (tiny) training."""

from __future__ import annotations

import json
import re
from pathlib import Path

import optuna

from tests.tune.conftest import load_valid_output, tiny_spec, tune, write_spec

LINE = re.compile(r"^trial (\d+) (complete|pruned|fail) .*best=\S+ \[(\d+)/(\d+)\]$", re.M)


def test_local_run_writes_schema_valid_output_summary_and_ci_progress_lines(
    tmp_path: Path,
) -> None:
    spec = write_spec(tmp_path / "spec.yaml", tiny_spec(n_trials=2))
    result = tune(
        tmp_path, str(spec), "--output", "best.json", "--summary", "summary.md",
        "--max-score", "100",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr

    doc = load_valid_output(tmp_path / "best.json")
    assert doc["mode"] == "local" and doc["status"] == "completed"
    assert doc["counts"] == {"n_trials": 2, "complete": 2, "pruned": 0, "failed": 0}
    assert doc["metric"] == "val_loss" and doc["direction"] == "minimize"
    assert doc["best_params"]["batch_size"] in (16, 32)
    assert doc["best_params"]["patience"] == 10  # fixed values are part of the best config
    # the built-in trainers have a test split: its metrics of the best trial come along
    assert set(doc["test_metrics"]) >= {"test_loss", "test_acc"}
    assert doc["best_metrics"]["val_loss"] == doc["best_value"]
    assert doc["gate"] == {
        "passed": True,
        "exit_code": 0,
        "checks": [
            {
                "name": "max_score",
                "op": "<=",
                "limit": 100.0,
                "value": doc["best_value"],
                "passed": True,
                "message": doc["gate"]["checks"][0]["message"],
            }
        ],
    }

    # not a terminal: one plain line per finished trial, counting up, on stderr
    lines = LINE.findall(result.stderr)
    assert [(n, s, done, total) for n, s, done, total in lines] == [
        ("0", "complete", "1", "2"),
        ("1", "complete", "2", "2"),
    ]
    assert "Traceback" not in result.stderr
    assert f"best val_loss = {doc['best_value']:.6g}" in result.stdout

    summary = (tmp_path / "summary.md").read_text()
    assert "passed" in summary
    assert f"| batch_size | {doc['best_params']['batch_size']} |" in summary
    assert "| test_loss |" in summary


def test_warm_start_goes_first_and_an_unbeatable_baseline_or_threshold_exits_1(
    tmp_path: Path,
) -> None:
    previous = {
        "weight_decay": 0.0012345,
        "dropout": 0.3333,
        "batch_size": 16,
        "patience": 10,
        "l1": 0.0,
        "label_smoothing": 0.0,
    }
    # what a previous run wrote; its best value cannot be beaten (cross-entropy > 0)
    baseline = {
        "schema_version": 1,
        "study_name": "main-branch",
        "metric": "val_loss",
        "direction": "minimize",
        "best_value": 0.0,
        "best_params": previous,
    }
    (tmp_path / "previous.json").write_text(json.dumps(baseline))
    spec = write_spec(tmp_path / "spec.yaml", tiny_spec(name="pr", n_trials=2))
    db = tmp_path / "tune.db"
    result = tune(
        tmp_path, str(spec), "--db", str(db), "--output", "best.json",
        "--warm-start", "previous.json", "--baseline", "previous.json",
        "--max-regression", "0.01", "--max-score", "0",
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert "error: gate failed (exit 1)" in result.stderr
    assert "baseline 0" in result.stderr and "max regression 0.01" in result.stderr

    trials = optuna.load_study(study_name="pr", storage=f"sqlite:///{db}").trials
    first = min(trials, key=lambda t: t.number)
    # only the searched parameters are enqueued (patience is fixed by the spec)
    assert first.number == 0
    assert first.params == {"dropout": 0.3333, "weight_decay": 0.0012345, "batch_size": 16}

    doc = load_valid_output(tmp_path / "best.json")
    assert doc["warm_start_params"] == first.params
    assert doc["baseline"] == {
        "path": "previous.json",
        "study_name": "main-branch",
        "best_value": 0.0,
    }
    checks = [(c["name"], c["op"], c["limit"], c["passed"]) for c in doc["gate"]["checks"]]
    # an impossible threshold (cross-entropy is never <= 0) and the baseline both fail
    assert checks == [("max_score", "<=", 0.0, False), ("baseline", "<=", 0.01, False)]
    assert "max-score" in result.stderr
    assert doc["gate"]["passed"] is False and doc["gate"]["exit_code"] == 1


def test_timeout_cancels_the_study_and_exits_3(tmp_path: Path) -> None:
    long = dict(tiny_spec(n_trials=50)["trainer_config"], max_epochs=200)
    spec = write_spec(tmp_path / "spec.yaml", tiny_spec(n_trials=50, trainer_config=long))
    db = tmp_path / "tune.db"
    result = tune(tmp_path, str(spec), "--db", str(db), "--timeout", "2", "--output", "out.json")
    assert result.returncode == 3, result.stderr
    assert "timed out after 2 s" in result.stderr and "Traceback" not in result.stderr
    doc = load_valid_output(tmp_path / "out.json")
    assert doc["status"] == "cancelled" and doc["gate"]["exit_code"] == 3


def test_failed_study_exits_3_with_the_reason(tmp_path: Path, test_plugin: str) -> None:
    # the test plugin's loss turns NaN at epoch 0: every trial diverges, and the failure streak
    # (one, here) fails the study
    bad = tiny_spec(trainer="test-plugin-lightning", trainer_config={"nan_at_epoch": 0})
    spec = write_spec(tmp_path / "spec.yaml", bad)
    streak = {"REGTUNE_MAX_CONSECUTIVE_FAILURES": "1"}
    result = tune(tmp_path, str(spec), "--output", "out.json", env=streak)
    assert result.returncode == 3, result.stderr
    assert "study did not finish (exit 3): the study ended failed" in result.stderr
    assert "TrialDiverged: training diverged at epoch 0" in result.stderr
    assert load_valid_output(tmp_path / "out.json")["status"] == "failed"
