"""docker/Dockerfile: hadolint-clean, and the properties the issue asks for hold in its stages."""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.deploy._tools import DOCKER_DIR, ROOT, hadolint_path

DOCKERFILE = DOCKER_DIR / "Dockerfile"
ENTRYPOINT = DOCKER_DIR / "entrypoint.sh"


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n(\s*#[^\n]*\n)*", " ", text)
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def stages() -> dict[str, list[tuple[str, str]]]:
    """Instructions by stage name (`FROM x AS name`)."""
    result: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for word, rest in instructions(DOCKERFILE.read_text()):
        if word == "FROM":
            name = rest.split()[-1] if " AS " in rest.upper() else rest
            current = result.setdefault(name, [])
        current.append((word, rest))
    return result


def test_hadolint_reports_nothing() -> None:
    done = subprocess.run(
        [hadolint_path(), "--no-color", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_hadolint_catches_a_bad_dockerfile(tmp_path: Path) -> None:
    # guards the test above: the linter really runs and really fails
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN apt-get install gcc\nUSER root\n")
    done = subprocess.run([hadolint_path(), "--no-color", str(bad)], capture_output=True, text=True)
    assert done.returncode != 0
    assert "DL3006" in done.stdout  # untagged base image


def test_variant_argument_selects_the_torch_build() -> None:
    s = stages()
    cpu = " ".join(rest for word, rest in s["torch-cpu"] if word == "RUN")
    cuda = " ".join(rest for word, rest in s["torch-cuda"] if word == "RUN")
    assert ("ARG", "TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu") in s["torch-cpu"]
    assert 'PIP_INDEX_URL="${TORCH_INDEX_URL:-$PIP_INDEX_URL}"' in cpu
    # whatever index serves it, the CPU stage can only resolve the CPU build
    assert '"torch==${TORCH_VERSION}+cpu"' in cpu
    assert "torch==" in cuda and "index-url" not in cuda  # PyPI's CUDA build
    assert s["builder"][0] == ("FROM", "torch-${VARIANT} AS builder")
    assert any(
        w == "ARG" and rest == "VARIANT=cpu" for w, rest in instructions(DOCKERFILE.read_text())
    )


def test_final_stage_is_non_root_without_build_tools_and_has_a_healthcheck() -> None:
    final = stages()["final"]
    runs = " ".join(rest for word, rest in final if word == "RUN")
    for tool in ("build-essential", "gcc", "apt-get install", "pip install"):
        assert tool not in runs, tool
    # the venv and the code come from the builder, nothing is compiled here
    copies = [rest for word, rest in final if word == "COPY"]
    assert "--from=builder /opt/venv /opt/venv" in copies
    users = [rest for word, rest in final if word == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    (health,) = [rest for word, rest in final if word == "HEALTHCHECK"]
    assert "/healthz" in health and "curl" not in health and "python" in health


def _ignored(path: str, patterns: list[str]) -> bool:
    ignored = False
    for pat in patterns:
        negate = pat.startswith("!")
        pat = pat.lstrip("!")
        hit = fnmatch.fnmatch(path, pat) or fnmatch.fnmatch(path, pat.rstrip("/*"))
        hit = hit or any(fnmatch.fnmatch(path, p) for p in (pat + "/*", "**/" + pat))
        if hit:
            ignored = not negate
    return ignored


def test_everything_the_dockerfile_copies_is_in_the_build_context() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    sources = []
    for word, rest in instructions(DOCKERFILE.read_text()):
        if word == "COPY" and "--from=" not in rest:
            sources += [a for a in rest.split()[:-1] if not a.startswith("--")]
    assert {"pyproject.toml", "service", "trainers", "alembic"} <= set(sources)
    for src in sources:
        assert (ROOT / src).exists(), f"{src} does not exist"
        assert not _ignored(src, patterns), f"{src} is excluded by .dockerignore"
    # and what must stay out of the image does
    for path in (".venv", ".git", "tests", "docker/.env", "regtune.db"):
        assert _ignored(path, patterns), f"{path} would be sent to the build"


@pytest.fixture
def fake_regtune(tmp_path: Path) -> dict[str, str]:
    """A PATH whose `regtune` prints its arguments, to watch what the entrypoint runs."""
    fake = tmp_path / "regtune"
    fake.write_text('#!/bin/sh\necho "regtune $*"\n')
    fake.chmod(0o755)
    return {**os.environ, "PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}"}


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([], "regtune serve --workers 0"),
        (["worker", "--devices", "0,1"], "regtune worker --devices 0,1"),
        (["db", "upgrade"], "regtune db upgrade"),
        (["echo", "plain", "program"], "plain program"),
    ],
)
def test_entrypoint_runs_regtune_subcommands_or_other_programs(
    fake_regtune: dict[str, str], args: list[str], expected: str
) -> None:
    done = subprocess.run(
        ["sh", str(ENTRYPOINT), *args], capture_output=True, text=True, env=fake_regtune
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == expected


def test_the_copied_build_context_installs_and_migrates(tmp_path: Path) -> None:
    """Replays the builder's last steps without Docker: copy exactly what the Dockerfile COPYs,
    `pip install --no-deps --no-build-isolation .` (a regular, non-editable install) into a fresh
    venv, then `regtune db upgrade` from it. The final stage gets only the venv, so the
    migrations must come from the installed package, not from the copied tree."""
    app = tmp_path / "app"
    app.mkdir()
    for word, rest in instructions(DOCKERFILE.read_text()):
        if word == "COPY" and "--from=" not in rest and "entrypoint" not in rest:
            for src in [a for a in rest.split()[:-1] if not a.startswith("--")]:
                source = ROOT / src
                if source.is_dir():
                    shutil.copytree(
                        source, app / src, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
                    )
                else:
                    shutil.copy2(source, app / src)
    (install,) = [
        rest for word, rest in stages()["builder"] if word == "RUN" and "--no-deps" in rest
    ]
    assert " -e " not in f" {install} " and install.rstrip().endswith(" .")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    # the dependencies (and pip, setuptools) come from the test's environment, read-only
    purelib = sysconfig.get_paths()["purelib"]
    (next(venv.glob("lib/python3*/site-packages")) / "deps.pth").write_text(purelib + "\n")
    python = venv / "bin" / "python"
    pip = [str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation"]
    done = subprocess.run(
        [*pip, "--no-index", "--no-cache-dir", "."], capture_output=True, text=True, cwd=app
    )
    assert done.returncode == 0, done.stderr
    shutil.rmtree(app)  # like the final stage, which copies /opt/venv only
    db = tmp_path / "image.db"
    env = {**os.environ, "TZ": "UTC", "REGTUNE_DATABASE_URL": f"sqlite:///{db}"}
    env.pop("PYTHONPATH", None)
    where = subprocess.run(
        [str(python), "-c", "import service.migrations as m; print(m.script_location())"],
        capture_output=True, text=True, check=True, cwd=tmp_path, env=env,
    )  # fmt: skip
    site = next(venv.glob("lib/python3*/site-packages"))
    assert Path(where.stdout.strip()) == (site / "service" / "_migrations").resolve()
    up = subprocess.run(
        [str(venv / "bin" / "regtune"), "db", "upgrade"],
        capture_output=True, text=True, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert up.returncode == 0, up.stderr + up.stdout
    with sqlite3.connect(db) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"regtune_studies", "regtune_trials", "studies", "trials"} <= tables
