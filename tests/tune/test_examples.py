"""The CI examples are well-formed and run the contract they document."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from service.spec import StudySpec, load_spec_file

CI = Path(__file__).resolve().parents[2] / "examples" / "ci"


def _load(name: str) -> dict[Any, Any]:  # YAML keys: `on` reads as True
    data = yaml.safe_load((CI / name).read_text())
    assert isinstance(data, dict)
    return data


def _commands(job: dict[str, Any]) -> str:
    parts = [str(s.get("run", "")) for s in job.get("steps", [])]
    parts += [str(x) for k in ("script", "after_script") for x in job.get(k, [])]
    return "\n".join(parts)


def test_github_workflow_runs_tune_on_pull_requests_with_the_main_baseline() -> None:
    wf = _load("github-actions.yml")
    assert "pull_request" in wf[True]  # YAML 1.1 reads the key `on` as True
    job = wf["jobs"]["tune"]
    commands = _commands(job)
    assert "regtune tune examples/ci/regularization.yaml" in commands
    assert "--baseline baseline/best.json" in commands and "--summary summary.md" in commands
    assert "GITHUB_STEP_SUMMARY" in commands and "gh pr comment" in commands
    uses = [s.get("uses", "") for s in job["steps"]]
    assert any(u.startswith("actions/upload-artifact") for u in uses)
    download = next(s for s in job["steps"] if "download-artifact" in s.get("uses", ""))
    assert download["with"]["branch"] == "main"


def test_gitlab_job_runs_tune_in_merge_requests_and_keeps_best_json() -> None:
    job = _load("gitlab-ci.yml")["regtune"]
    rules = " ".join(r["if"] for r in job["rules"])
    assert "merge_request_event" in rules and "CI_DEFAULT_BRANCH" in rules
    commands = _commands(job)
    assert "regtune tune examples/ci/regularization.yaml" in commands
    assert "--baseline baseline.json" in commands and "merge_requests" in commands
    assert job["artifacts"]["when"] == "always" and "best.json" in job["artifacts"]["paths"]


def test_the_example_spec_is_valid() -> None:
    StudySpec.model_validate(load_spec_file(CI / "regularization.yaml"))
