"""Real tiny studies for the dashboard tests: submitted through the API, run by the real worker.

Nothing here writes rows by hand: the study is POSTed to the real app and the real worker loop
(`service.worker.run_worker`, in-process) trains real tiny Lightning models.
"""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from service.app import create_app
from service.worker import WorkerOptions, run_worker
from tests.support import settings_for as settings_for  # re-exported for the dashboard tests

# a few milliseconds per epoch on CPU
TINY_CONFIG = {"max_epochs": 4, "n_samples": 160, "n_features": 6, "n_informative": 3}


def tiny_spec(name: str, n_trials: int = 6, **overrides: Any) -> dict[str, Any]:
    """A valid spec searching every plotted parameter; trials train in well under a second."""
    spec: dict[str, Any] = {
        "name": name,
        "trainer": "synthetic-mlp",
        "trainer_config": dict(TINY_CONFIG),
        "search_space": {
            "weight_decay": {"low": 1e-6, "high": 1e-1, "log": True},
            "dropout": {"low": 0.0, "high": 0.5},
            "label_smoothing": {"low": 0.0, "high": 0.2},
            "batch_size": {"choices": [16, 32]},
            "patience": {"low": 1, "high": 3},
        },
        "sampler": {"name": "random", "seed": 0},
        # keeps the best 60% of curves from the fourth trial on: some pruned curves to look at
        "pruner": {
            "name": "percentile",
            "options": {"percentile": 60.0, "n_startup_trials": 3, "n_warmup_steps": 1},
        },
        "budget": {"n_trials": n_trials},
    }
    spec.update(overrides)
    return spec


def submit(client: TestClient, spec: dict[str, Any]) -> dict[str, Any]:
    response = client.post("/api/v1/studies", json=spec)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def run_to_completion(url: str, study_id: int) -> None:
    """The real worker loop, in this process, until the study has no trial left to run."""
    options = WorkerOptions(study_id=study_id, exit_when_idle=True, name="dashboard-test")
    run_worker(settings_for(url), options, handle_signals=False)


def completed_study(url: str, name: str = "finished", n_trials: int = 6) -> int:
    """Submit a tiny study over the real app and run it to completion; returns its id."""
    with TestClient(create_app(settings_for(url))) as client:
        study_id = int(submit(client, tiny_spec(name, n_trials))["id"])
        run_to_completion(url, study_id)
        detail = client.get(f"/api/v1/studies/{study_id}").json()
    assert detail["status"] == "completed", detail
    return study_id
