"""A private Docker engine for test_docker_engine.py, with everything a clean machine lacks.

No registry is reachable here, so nothing is pulled:
- the base image is a debootstrap of Debian bookworm (python3 is 3.11) from the apt mirror this
  machine uses, imported with `docker import`;
- pip inside the build reads a wheelhouse that the host's pip filled with the host's own index
  configuration (pip.conf: find-links with the CPU torch wheel, local indexes, a TLS-intercepting
  proxy whose CA only the host trusts), served on 127.0.0.1 to a `--network host` build;
- dockerd runs as root on its own socket, exec root and data root, beside any other engine.

Cached between runs under $REGTUNE_TEST_CACHE (default ~/.cache/regtune-tests)/docker: the
debootstrap tarball (keyed by release and month, so security updates arrive monthly), the
wheelhouse (keyed by the requirement list) and the engine's data root (image layers and build
cache; containers, networks and volumes are removed after each run).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.server
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import tomllib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from tests.deploy._tools import ROOT, missing
from tests.support import stop_process

CACHE = Path(os.environ.get("REGTUNE_TEST_CACHE", Path.home() / ".cache" / "regtune-tests"))
DOCKER_CACHE = CACHE / "docker"
RELEASE = "bookworm"  # the Debian release whose python3 is 3.11, as in python:3.11-slim-bookworm
BASE_PACKAGES = ["python3", "python3-venv", "python3-pip", "python-is-python3", "ca-certificates"]
BASE_IMAGE = f"regtune-test/debian-python:{RELEASE}"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
WHEEL_PORT = int(os.environ.get("REGTUNE_TEST_WHEEL_PORT", "38391"))
TORCH_CPU = "torch==2.13.0+cpu"  # the Makefile's TORCH_CPU, as the Dockerfile's cpu stage pins it


def _say(msg: str) -> None:
    print(f"[docker-engine] {msg}", file=sys.stderr, flush=True)


def require_tools() -> None:
    """Root, dockerd, the Debian docker CLI, debootstrap: fail under CI, skip elsewhere."""
    if os.geteuid() != 0:
        missing("the docker engine test starts dockerd and needs root")
    for tool, package in (("dockerd", "docker.io"), ("debootstrap", "debootstrap")):
        if shutil.which(tool) is None:
            missing(f"{tool} is not installed (apt-get install {package}; tests/setup_env.py)")
    if not Path(docker_cli()).exists():
        missing("the docker CLI of Debian's docker.io is missing (/usr/bin/docker)")


def docker_cli() -> str:
    """The CLI packaged with dockerd: its built-in BuildKit needs no buildx plugin."""
    dockerd = shutil.which("dockerd") or "/usr/sbin/dockerd"
    return str(Path(dockerd).resolve().parent.parent / "bin" / "docker")


def apt_mirror() -> str:
    """The Debian mirror this machine's apt uses (the one known to be reachable)."""
    texts = [p.read_text() for p in sorted(Path("/etc/apt").glob("sources.list.d/*.sources"))]
    for text in texts:
        for stanza in text.split("\n\n"):
            if re.search(rf"^Suites:.*\b{RELEASE}\b(?!-)", stanza, re.M):
                found = re.search(r"^URIs:\s*(\S+)", stanza, re.M)
                if found and "security" not in found.group(1):
                    return found.group(1)
    sources = Path("/etc/apt/sources.list")
    if sources.exists():
        for line in sources.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[0] == "deb" and parts[2] == RELEASE:
                return parts[1]
    return DEFAULT_MIRROR


def base_tarball() -> Path:
    """A debootstrap of RELEASE with python3 and venv, cached per month."""
    DOCKER_CACHE.mkdir(parents=True, exist_ok=True)
    month = datetime.now(UTC).strftime("%Y-%m")
    tarball = DOCKER_CACHE / f"{RELEASE}-python3-{month}.tar"
    if tarball.exists():
        return tarball
    mirror = apt_mirror()
    _say(f"debootstrap {RELEASE} from {mirror} (cached afterwards in {tarball})")
    with tempfile.TemporaryDirectory(dir=DOCKER_CACHE) as tmp:
        rootfs = Path(tmp) / "rootfs"
        subprocess.run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={','.join(BASE_PACKAGES)}",
                RELEASE,
                str(rootfs),
                mirror,
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        # apt caches of the bootstrap are not part of an image
        shutil.rmtree(rootfs / "var" / "cache" / "apt" / "archives", ignore_errors=True)
        (rootfs / "var" / "cache" / "apt" / "archives" / "partial").mkdir(parents=True)
        partial = tarball.with_suffix(".partial")
        with tarfile.open(partial, "w") as tar:
            tar.add(rootfs, arcname=".")
        partial.rename(tarball)
    for old in DOCKER_CACHE.glob(f"{RELEASE}-python3-*.tar"):
        if old != tarball:
            old.unlink()
    return tarball


def requirements() -> list[str]:
    """What the Dockerfile installs: pip/setuptools/wheel, the CPU torch, the project's deps."""
    with (ROOT / "pyproject.toml").open("rb") as f:
        deps = tomllib.load(f)["project"]["dependencies"]
    return ["pip>=24", "setuptools>=77", "wheel", TORCH_CPU, *deps]


def wheelhouse() -> Path:
    """Wheels for `requirements()`, downloaded by the host's pip with the host's pip config."""
    reqs = requirements()
    key = hashlib.sha256("\n".join(reqs).encode()).hexdigest()[:16]
    house = DOCKER_CACHE / "wheels"
    stamp = house / f".complete-{key}"
    if stamp.exists():
        return house
    house.mkdir(parents=True, exist_ok=True)
    _say(f"downloading {len(reqs)} requirements into {house}")
    # the interpreter the image has (3.11): its wheels are the ones the image can install
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "-d", str(house), *reqs],
        check=True,
        stderr=subprocess.DEVNULL,
    )
    for old in house.glob(".complete-*"):
        old.unlink()
    stamp.touch()
    return house


@contextlib.contextmanager
def serve_directory(directory: Path) -> Iterator[str]:
    """An HTTP listing of `directory` on 127.0.0.1 (pip's --find-links reads its links)."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(directory))
    # a fixed port: the URL is a build argument, part of the build cache key of every layer
    # after it (a random port would rebuild them all); another free port if it is taken
    try:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", WHEEL_PORT), handler)
    except OSError:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


class Engine:
    """dockerd on its own socket; `run(...)` is the docker CLI pointed at it."""

    def __init__(self, run_dir: Path) -> None:
        self.data_root = DOCKER_CACHE / "engine" / "data"
        self.run_dir = run_dir
        self.socket = run_dir / "docker.sock"
        self.env = {**os.environ, "DOCKER_HOST": f"unix://{self.socket}", "DOCKER_BUILDKIT": "1"}
        self.env.pop("DOCKER_CONTEXT", None)
        self.cli = docker_cli()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = run_dir / "dockerd.log"

    def start(self) -> None:
        self.data_root.mkdir(parents=True, exist_ok=True)
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [
                    "dockerd",
                    "--host",
                    f"unix://{self.socket}",
                    "--data-root",
                    str(self.data_root),
                    "--exec-root",
                    str(self.run_dir / "exec"),
                    "--pidfile",
                    str(self.run_dir / "dockerd.pid"),
                    # no default bridge and no iptables rules: this engine must not touch the
                    # host's network set-up; compose's own network and loopback ports suffice
                    "--bridge",
                    "none",
                    "--iptables=false",
                    "--ip-masq=false",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 60
        while self.run("version", check=False).returncode != 0:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"dockerd did not start:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.5)

    def run(
        self, *args: str, check: bool = True, timeout: float = 900, cwd: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [self.cli, *args],
            env=self.env,
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)}:\n{done.stdout[-4000:]}{done.stderr}")
        return done

    def has_image(self, tag: str) -> bool:
        return self.run("image", "inspect", tag, check=False).returncode == 0

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        # the data root is a cache: keep it bounded (old images, then the oldest build cache)
        self.run("image", "prune", "--force", check=False)
        self.run("builder", "prune", "--force", "--keep-storage", "4GB", check=False)
        stop_process(self.proc, timeout=60)
