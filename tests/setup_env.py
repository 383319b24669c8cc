"""Prepare this machine for the test suite; `make test` runs it before pytest.

Idempotent and quiet when everything is already there:
- PostgreSQL must answer at REGTUNE_TEST_POSTGRES_URL (default 127.0.0.1:5432, user postgres).
  If it does not and a local cluster exists, start it. Under CI=true an unreachable server is an
  error (the PostgreSQL tests must fail, not skip).
- Debian's chromium (for the Playwright browser tests; Playwright never downloads a browser here).
- The test plugin distribution `tests/plugin_pkg` (editable).
- A docker compose CLI (to validate docker/compose.yaml; no engine is needed for that).
- kubectl (renders deploy/k8s); Debian's docker.io and debootstrap (root only): the `docker`
  tests build and run the images on an engine they start themselves.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

PG_URL = os.environ.get(
    "REGTUNE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
CHROMIUM = Path("/usr/bin/chromium")
APT_PACKAGES = ["chromium"]


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _say(msg: str) -> None:
    print(f"[setup_env] {msg}", flush=True)


def _pg_ok() -> bool:
    from sqlalchemy import create_engine, text

    engine = create_engine(PG_URL, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return True
    except Exception:
        return False
    finally:
        engine.dispose()


def ensure_postgres() -> bool:
    if _pg_ok():
        return True
    clusters = Path("/etc/postgresql")
    if shutil.which("pg_ctlcluster") and clusters.is_dir():
        for version in sorted(p.name for p in clusters.iterdir()):
            _say(f"PostgreSQL not answering; starting cluster {version}/main")
            subprocess.run(
                ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "start"],
                check=False,
            )
        for _ in range(20):
            if _pg_ok():
                return True
            time.sleep(0.5)
    msg = f"PostgreSQL unreachable at {PG_URL}"
    if _in_ci():
        _say(f"ERROR: {msg} (CI=true: the PostgreSQL tests will fail)")
        return False
    _say(f"warning: {msg}; PostgreSQL tests will be skipped (they fail under CI=true)")
    return True


def _apt_install(packages: list[str]) -> bool:
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return False
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    _say(f"installing Debian packages: {' '.join(packages)}")
    quiet = {"stdout": subprocess.DEVNULL, "check": False, "env": env}
    subprocess.run(["apt-get", "update", "-qq"], **quiet)  # type: ignore[call-overload]
    done = subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages],
        **quiet,  # type: ignore[call-overload]
    )
    return bool(done.returncode == 0)


def ensure_chromium() -> bool:
    if CHROMIUM.exists():
        return True
    if _apt_install(APT_PACKAGES) and CHROMIUM.exists():
        return True
    _say("warning: /usr/bin/chromium missing; browser tests will fail under CI=true")
    return not _in_ci()


def _compose_ok() -> bool:
    for cmd in (["docker", "compose", "version"], ["docker-compose", "version"]):
        if shutil.which(cmd[0]):
            done = subprocess.run(cmd, capture_output=True, check=False)
            if done.returncode == 0:
                return True
    return False


def ensure_compose() -> bool:
    """A compose CLI to validate docker/compose.yaml (no engine needed).

    Debian bookworm packages only docker-compose v1; --no-install-recommends keeps docker.io out.
    """
    if _compose_ok():
        return True
    if _apt_install(["docker-compose"]) and _compose_ok():
        return True
    _say("warning: no docker compose CLI; the compose test fails under CI=true")
    return not _in_ci()


DOCKER_ENGINE_PACKAGES = {"dockerd": "docker.io", "debootstrap": "debootstrap"}


def ensure_kubectl() -> bool:
    """kubectl renders deploy/k8s (`kubectl kustomize`; no cluster needed).

    Not in Debian's own archive: this machine's apt has it from the Google Cloud SDK repository.
    """
    if shutil.which("kubectl") or (_apt_install(["kubectl"]) and shutil.which("kubectl")):
        return True
    _say("warning: kubectl missing; the Kubernetes manifest tests fail under CI=true")
    return not _in_ci()


def ensure_docker_engine() -> bool:
    """Debian's docker.io (dockerd and its CLI) and debootstrap, for the `docker` tests.

    They start their own dockerd as root (tests/deploy/_engine.py); nothing runs until then.
    """
    lacking = [pkg for tool, pkg in DOCKER_ENGINE_PACKAGES.items() if not shutil.which(tool)]
    if not lacking or (_apt_install(lacking) and all(map(shutil.which, DOCKER_ENGINE_PACKAGES))):
        return True
    _say(f"warning: {' '.join(lacking)} missing; the docker engine test fails under CI=true")
    return not _in_ci()


def ensure_test_plugin() -> bool:
    """The test plugin distribution (entry-point discovery is tested on a real install)."""
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        distribution("regtune-test-plugin")
        return True
    except PackageNotFoundError:
        pass
    plugin = Path(__file__).parent / "plugin_pkg"
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation"]
    done = subprocess.run([*cmd, "-e", str(plugin)], check=False)
    return done.returncode == 0


def main() -> int:
    ok = ensure_test_plugin()
    ok = ensure_postgres() and ok
    ok = ensure_chromium() and ok
    ok = ensure_compose() and ok
    ok = ensure_docker_engine() and ok
    ok = ensure_kubectl() and ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
