"""The built wheel carries the Alembic migrations, and a regular (non-editable) install of it
finds them and migrates: `pip install regtune-*.whl` needs no source tree."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory

from tests.deploy._tools import ROOT

# what the build reads: the readme, the packages and alembic/ (mapped to service._migrations)
BUILD_INPUTS = ("pyproject.toml", "README.md", "alembic", "service", "trainers")
SKIP = shutil.ignore_patterns("__pycache__", "*.pyc")


def _source_files(top: str) -> list[Path]:
    return sorted(
        p
        for p in (ROOT / top).rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    )


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel built from a copy of the build inputs (the shared checkout gets no build/)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in BUILD_INPUTS:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=SKIP)
        else:
            shutil.copy2(ROOT / name, src / name)
    dist = tmp / "dist"
    done = subprocess.run(
        [
            sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
            "--no-index", "-w", str(dist), str(src),
        ],
        capture_output=True, text=True, cwd=tmp,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    (built,) = dist.glob("regtune-*.whl")
    return built


def test_wheel_carries_every_migration_file(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as whl:
        names = set(whl.namelist())
        migrations = _source_files("alembic")
        relative = {p.relative_to(ROOT / "alembic").as_posix() for p in migrations}
        assert {"env.py", "script.py.mako"} <= relative
        assert any(r.startswith("versions/") for r in relative)
        for path in migrations:
            inside = f"service/_migrations/{path.relative_to(ROOT / 'alembic').as_posix()}"
            assert inside in names, f"{inside} is missing from {wheel.name}"
            assert whl.read(inside) == path.read_bytes(), f"{inside} differs from {path}"
    # a top-level alembic/ in site-packages would clash with the Alembic library itself
    assert not any(n.startswith("alembic/") for n in names)
    # the explicit package list in pyproject.toml misses no module
    for top in ("service", "trainers"):
        for path in _source_files(top):
            assert path.relative_to(ROOT).as_posix() in names, f"{path} is not in the wheel"


def test_installed_wheel_finds_its_migrations_and_migrates(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next(venv.glob("lib/python3*/site-packages"))
    # the dependencies (and pip) come from the test's environment; the repository root does not
    purelib = sysconfig.get_paths()["purelib"]
    (site / "deps.pth").write_text(purelib + "\n")
    python = str(venv / "bin" / "python")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    run = tmp_path / "run"  # outside the repository: nothing is found relative to the cwd
    run.mkdir()
    done = subprocess.run(
        [python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
        capture_output=True, text=True, cwd=run, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr

    probe = subprocess.run(
        [python, "-c", "import service, service.migrations as m; "
         "print(service.__file__); print(m.script_location())"],
        capture_output=True, text=True, cwd=run, env=env, check=True,
    )  # fmt: skip
    package_file, location = (Path(line) for line in probe.stdout.split())
    assert package_file.resolve() == (site / "service" / "__init__.py").resolve()
    assert location == (site / "service" / "_migrations").resolve()
    for path in _source_files("alembic"):
        assert (location / path.relative_to(ROOT / "alembic")).is_file(), path

    db = run / "fresh.db"
    up = subprocess.run(
        [str(venv / "bin" / "regtune"), "db", "upgrade"],
        capture_output=True, text=True, cwd=run,
        env={**env, "TZ": "UTC", "REGTUNE_DATABASE_URL": f"sqlite:///{db}"},
    )  # fmt: skip
    assert up.returncode == 0, up.stdout + up.stderr
    with sqlite3.connect(db) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        (head,) = conn.execute("SELECT version_num FROM regtune_alembic_version").fetchone()
    assert {"regtune_studies", "regtune_trials", "regtune_trial_epochs"} <= tables
    assert head == ScriptDirectory(str(ROOT / "alembic")).get_current_head()
