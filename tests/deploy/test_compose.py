"""docker/compose.yaml: `compose config` accepts it, and it describes the deployment we document."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy._tools import DOCKER_DIR, compose_command

COMPOSE_FILE = DOCKER_DIR / "compose.yaml"
ENV_EXAMPLE = DOCKER_DIR / ".env.example"
ALL_PROFILES = ["gpu", "cpu", "dashboard"]


def _volume(v: str | dict[str, Any]) -> tuple[str, str]:
    """(source, target) from the short (v1 output) or long (v2 output) volume syntax."""
    if isinstance(v, str):
        source, target = v.split(":")[:2]
        return source, target
    return v["source"], v["target"]


def _host_ip(p: str | dict[str, Any]) -> str:
    """The host address a port is published on (short `ip:host:container` or long syntax)."""
    if isinstance(p, str):
        parts = p.split(":")
        return parts[0] if len(parts) == 3 else "0.0.0.0"
    return str(p.get("host_ip", "0.0.0.0"))


def run_config(env_file: Path, profiles: list[str]) -> subprocess.CompletedProcess[str]:
    """`compose config` with `env_file` both for ${...} in the file and for the containers."""
    cmd = [*compose_command(), "--env-file", str(env_file), "-f", str(COMPOSE_FILE)]
    for p in profiles:
        cmd += ["--profile", p]
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("REGTUNE_", "POSTGRES_", "COMPOSE_"))
    }
    # env_file in compose.yaml is ${REGTUNE_ENV_FILE:-.env}, relative to docker/
    env["REGTUNE_ENV_FILE"] = os.path.relpath(env_file, DOCKER_DIR)
    return subprocess.run([*cmd, "config"], capture_output=True, text=True, env=env, check=False)


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    done = run_config(ENV_EXAMPLE, ALL_PROFILES)
    assert done.returncode == 0, done.stderr
    parsed = yaml.safe_load(done.stdout)
    assert isinstance(parsed, dict)
    return parsed


def test_all_services_validate(config: dict[str, Any]) -> None:
    assert set(config["services"]) == {"postgres", "api", "worker", "worker-cpu", "dashboard"}


def test_postgres_keeps_its_data_in_a_named_volume_and_reports_health(
    config: dict[str, Any],
) -> None:
    pg = config["services"]["postgres"]
    volumes = pg["volumes"]
    assert ("pgdata", "/var/lib/postgresql/data") in [_volume(v) for v in volumes], volumes
    assert "pgdata" in config["volumes"]
    assert "pg_isready" in " ".join(pg["healthcheck"]["test"])


def test_api_migrates_before_serving_and_waits_for_a_healthy_database(
    config: dict[str, Any],
) -> None:
    api = config["services"]["api"]
    script = " ".join(api["command"])
    assert script.index("regtune db upgrade") < script.index("regtune serve")
    assert "&&" in script  # no serving on a failed migration
    assert "--workers 0" in script
    assert api["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "/healthz" in " ".join(api["healthcheck"]["test"])
    # the database URL reaches the container from the env file
    assert api["environment"]["REGTUNE_DATABASE_URL"].startswith("postgresql+psycopg://")
    assert api["build"]["args"]["VARIANT"] == "cpu"


def test_gpu_worker_reserves_nvidia_gpus(config: dict[str, Any]) -> None:
    worker = config["services"]["worker"]
    assert worker["profiles"] == ["gpu"]
    assert worker["build"]["args"]["VARIANT"] == "cuda"
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia"
    assert devices[0]["capabilities"] == ["gpu"]
    assert worker["command"][:3] == ["worker", "--devices", "auto"]
    assert "--trials-per-device" in worker["command"]
    assert worker["depends_on"]["api"]["condition"] == "service_healthy"


def test_cpu_worker_is_a_profile_without_gpu_reservations(config: dict[str, Any]) -> None:
    cpu = config["services"]["worker-cpu"]
    assert cpu["profiles"] == ["cpu"]
    assert "deploy" not in cpu
    assert cpu["build"]["args"]["VARIANT"] == "cpu"
    assert cpu["command"][:3] == ["worker", "--devices", "cpu"]


def test_unauthenticated_ports_are_published_on_loopback_only(config: dict[str, Any]) -> None:
    for name in ("api", "dashboard"):
        for port in config["services"][name]["ports"]:
            assert _host_ip(port) == "127.0.0.1", (name, port)
    assert "ports" not in config["services"]["postgres"]


def test_plain_up_starts_no_gpu_service(config: dict[str, Any]) -> None:
    # services without a profile are what a plain `up` starts: a host lacking the NVIDIA
    # toolkit can still run the API (compose v1 lists every service in `config`, v2 only the
    # active ones, so this reads the profiles rather than the service list)
    default = {name for name, svc in config["services"].items() if not svc.get("profiles")}
    assert default == {"postgres", "api"}


def test_missing_database_password_is_refused(tmp_path: Path) -> None:
    lines = ENV_EXAMPLE.read_text().splitlines()
    env_file = tmp_path / "no-password.env"
    env_file.write_text("\n".join(x for x in lines if not x.startswith("POSTGRES_PASSWORD=")))
    done = run_config(env_file, [])
    assert done.returncode != 0
    assert "POSTGRES_PASSWORD" in done.stderr


def test_env_example_commits_no_secret_and_real_env_is_ignored() -> None:
    values = dict(
        line.split("=", 1)
        for line in ENV_EXAMPLE.read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert values["POSTGRES_PASSWORD"] == "change-me"
    assert ":change-me@" in values["REGTUNE_DATABASE_URL"]
    assert ".env" in (DOCKER_DIR / ".gitignore").read_text().split()
