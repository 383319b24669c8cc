"""The images really built and run on a Docker engine (tests/deploy/_engine.py starts one).

Builds docker/Dockerfile's CPU image on a debootstrapped bookworm base, runs it, then brings up
docker/compose.yaml (PostgreSQL from Debian's package, the API, one CPU worker), submits a study
over REST, waits for it to complete, restarts the API container and checks nothing was lost.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.deploy import _engine
from tests.deploy._tools import DOCKER_DIR, ROOT, compose_command
from tests.support import free_port, tiny_spec, wait_healthy

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(2400)]

IMAGE = "regtune-test/regtune"
TAG = "test"
POSTGRES_IMAGE = "regtune-test/postgres:15"
PROJECT = "regtune-docker-test"
STUDY = tiny_spec("docker-compose-study", n_trials=3)


@pytest.fixture(scope="module")
def engine() -> Iterator[_engine.Engine]:
    _engine.require_tools()
    compose_command()  # fails under CI (skips elsewhere) when no compose CLI is installed
    started = time.monotonic()
    tarball = _engine.base_tarball()
    wheels = _engine.wheelhouse()
    print(f"[docker-engine] base tarball and wheels ready at {time.monotonic() - started:.0f} s")
    # a short path: the engine's unix sockets must fit in 108 bytes
    run_dir = Path(tempfile.mkdtemp(prefix="rt-docker-"))
    eng = _engine.Engine(run_dir)
    eng.start()
    try:
        if not eng.has_image(_engine.BASE_IMAGE):
            eng.run("import", str(tarball), _engine.BASE_IMAGE)
        with _engine.serve_directory(wheels) as wheel_url:
            eng.run(
                "build",
                "--network",
                "host",  # the wheelhouse on 127.0.0.1, Debian's mirror for apt-get
                "-f",
                str(DOCKER_DIR / "Dockerfile"),
                "--build-arg",
                f"PYTHON_IMAGE={_engine.BASE_IMAGE}",
                "--build-arg",
                "PIP_NO_INDEX=1",
                "--build-arg",
                f"PIP_FIND_LINKS={wheel_url}",
                "--build-arg",
                "TORCH_INDEX_URL=",
                "-t",
                f"{IMAGE}:{TAG}",
                str(ROOT),
            )
        eng.run(
            "build",
            "--network",
            "host",
            "--build-arg",
            f"BASE_IMAGE={_engine.BASE_IMAGE}",
            "-t",
            POSTGRES_IMAGE,
            str(Path(__file__).parent / "postgres-image"),
        )
        print(f"[docker-engine] engine up, images built in {time.monotonic() - started:.0f} s")
        yield eng
    finally:
        eng.stop()
        shutil.rmtree(run_dir, ignore_errors=True)


def test_cpu_image_runs_regtune_as_non_root_with_the_cpu_torch(engine: _engine.Engine) -> None:
    ref = f"{IMAGE}:{TAG}"
    probe = (
        "import json, os, torch; from trainers import available_trainers; "
        "print(json.dumps({'uid': os.getuid(), 'torch': torch.__version__, "
        "'cuda': torch.cuda.is_available(), 'tz': os.environ['TZ'], "
        "'synthetic': 'synthetic-mlp' in available_trainers()}))"
    )
    out = engine.run("run", "--rm", ref, "python", "-c", probe).stdout
    facts = json.loads(out.strip().splitlines()[-1])
    assert facts == {
        "uid": 10001,
        "torch": "2.13.0+cpu",
        "cuda": False,
        "tz": "UTC",
        "synthetic": True,
    }
    # the entrypoint turns arguments into a regtune command; the migrations ship in the wheel
    # and the default SQLite database lives in the /data volume, writable by uid 10001
    engine.run("run", "--rm", ref, "db", "upgrade")
    labels = json.loads(engine.run("image", "inspect", "--format", "{{json .Config}}", ref).stdout)
    assert labels["User"] == "10001:10001"
    assert labels["Labels"]["io.regtune.variant"] == "cpu"
    assert labels["Healthcheck"]["Test"][0] == "CMD"


class Stack:
    """`compose` on docker/compose.yaml against the test engine, with a throwaway env file."""

    def __init__(self, engine: _engine.Engine, env_file: Path, port: int) -> None:
        self.env = {
            k: v
            for k, v in engine.env.items()
            if not k.startswith(("REGTUNE_", "POSTGRES_", "COMPOSE_"))
        }
        self.env["REGTUNE_ENV_FILE"] = str(env_file)
        self.cmd = [
            *compose_command(),
            "--project-name",
            PROJECT,
            "--env-file",
            str(env_file),
            "-f",
            str(DOCKER_DIR / "compose.yaml"),
            "--profile",
            "cpu",
        ]
        self.url = f"http://127.0.0.1:{port}"

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [*self.cmd, *args], env=self.env, capture_output=True, text=True, timeout=600
        )
        if check and done.returncode != 0:
            raise AssertionError(f"compose {' '.join(args)}:\n{done.stdout}{done.stderr}")
        return done


@pytest.fixture
def stack(engine: _engine.Engine, tmp_path: Path) -> Iterator[Stack]:
    port = free_port()
    text = (DOCKER_DIR / ".env.example").read_text().replace("change-me", "docker-test-pw")
    text += (
        f"\nREGTUNE_IMAGE={IMAGE}\nREGTUNE_TAG={TAG}\nPOSTGRES_IMAGE={POSTGRES_IMAGE}\n"
        f"REGTUNE_PUBLISH_PORT={port}\nREGTUNE_WORKER_POLL_INTERVAL=0.5\n"
    )
    env_file = tmp_path / "test.env"
    env_file.write_text(text)
    s = Stack(engine, env_file, port)
    s("down", "--volumes", "--remove-orphans", check=False)  # leftovers of an aborted run
    try:
        yield s
    finally:
        # pytest shows a test's captured output only when it fails
        print(s("logs", "--no-color", "--tail", "150", check=False).stdout)
        s("down", "--volumes", "--remove-orphans", "--timeout", "30", check=False)


def test_compose_stack_completes_a_study_and_keeps_it_across_an_api_restart(
    stack: Stack,
) -> None:
    stack("up", "-d", "--no-build")
    wait_healthy(stack.url, timeout=180)
    # the API binds 0.0.0.0 in its container, so auth is on: a write token from the CLI
    created = stack(
        "exec",
        "-T",
        "api",
        "regtune",
        "token",
        "create",
        "--name",
        "ci",
        "--scope",
        "write",
        "--json",
    )
    token = json.loads(created.stdout.strip().splitlines()[-1])["token"]
    headers = {"Authorization": f"Bearer {token}"}
    assert httpx.get(f"{stack.url}/api/v1/studies", timeout=10).status_code == 401

    resp = httpx.post(f"{stack.url}/api/v1/studies", json=STUDY, headers=headers, timeout=30)
    assert resp.status_code == 201, resp.text
    study_id = resp.json()["id"]

    deadline = time.monotonic() + 600
    while True:
        study = httpx.get(f"{stack.url}/api/v1/studies/{study_id}", headers=headers, timeout=10)
        status = study.json()["status"]
        if status in ("completed", "failed", "cancelled"):
            break
        assert time.monotonic() < deadline, f"study still {status}"
        time.sleep(2)
    assert status == "completed", study.text
    trials = httpx.get(
        f"{stack.url}/api/v1/studies/{study_id}/trials", headers=headers, timeout=10
    ).json()
    best = httpx.get(f"{stack.url}/api/v1/studies/{study_id}/best", headers=headers, timeout=10)
    assert best.status_code == 200, best.text
    assert trials["total"] == STUDY["budget"]["n_trials"]
    assert {t["state"] for t in trials["items"]} <= {"complete", "pruned"}

    stack("restart", "api")
    wait_healthy(stack.url, timeout=180)
    again = httpx.get(f"{stack.url}/api/v1/studies/{study_id}", headers=headers, timeout=10)
    assert again.status_code == 200  # the token survived too (it lives in PostgreSQL)
    assert again.json()["status"] == "completed"
    assert (
        httpx.get(
            f"{stack.url}/api/v1/studies/{study_id}/trials", headers=headers, timeout=10
        ).json()
        == trials
    )
    assert (
        httpx.get(f"{stack.url}/api/v1/studies/{study_id}/best", headers=headers, timeout=10).json()
        == best.json()
    )
