"""regtune's Alembic history beside Optuna's: upgrade/downgrade, isolation, and the SQL view."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import optuna
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from setuptools import find_namespace_packages
from sqlalchemy import insert, inspect, text

import service
from service import migrations
from service.db import make_engine, normalize_url
from service.migrations import (
    VERSION_TABLE,
    MigrationsNotFoundError,
    current,
    downgrade,
    include_name,
    include_object,
    script_location,
    upgrade,
)
from service.models import Base, StudyRecord, TrialRecord, utcnow

REGTUNE_TABLES = {
    "regtune_studies",
    "regtune_trials",
    "regtune_trial_epochs",
    "regtune_api_tokens",
}


ROOT = Path(__file__).resolve().parents[1]


def test_pyproject_maps_alembic_into_the_package_and_lists_every_package() -> None:
    """The wheel carries alembic/ as `service._migrations`; the explicit package list that this
    mapping needs (setuptools' `find` cannot add it) misses no package of the source tree.

    tests/deploy/test_wheel.py builds the wheel and installs it."""
    setuptools_cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert setuptools_cfg["package-dir"] == {"service._migrations": "alembic"}
    assert "script.py.mako" in setuptools_cfg["package-data"]["service._migrations"]
    found = find_namespace_packages(
        where=str(ROOT), include=["service*", "trainers*"], exclude=["*__pycache__*"]
    )
    listed = setuptools_cfg["packages"]
    assert len(listed) == len(set(listed))
    assert set(listed) == {*found, "service._migrations", "service._migrations.versions"}
    assert not (ROOT / "alembic" / "__init__.py").exists()  # would shadow the alembic library


def test_script_location_is_the_repository_alembic_dir_in_a_source_checkout() -> None:
    if Path(service.__file__).resolve().parent != ROOT / "service":
        pytest.skip("regtune is not imported from this checkout (a regular install)")
    assert script_location() == ROOT / "alembic"
    assert migrations.alembic_config("sqlite://").get_main_option("script_location") == str(
        ROOT / "alembic"
    )


def test_script_location_prefers_the_packaged_copy_over_the_alembic_library(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In site-packages, `service/../alembic` is the Alembic library: never taken for scripts."""
    site = tmp_path / "site-packages"
    (site / "service").mkdir(parents=True)
    (site / "alembic" / "templates" / "generic").mkdir(parents=True)
    (site / "alembic" / "__init__.py").write_text("")
    (site / "alembic" / "templates" / "generic" / "env.py").write_text("")
    monkeypatch.setattr("service.migrations.resources.files", lambda package: site / package)
    with pytest.raises(MigrationsNotFoundError, match="reinstall regtune"):
        script_location()
    packaged = site / "service" / "_migrations"
    (packaged / "versions").mkdir(parents=True)
    (packaged / "env.py").write_text("")
    assert script_location() == packaged.resolve()
    cfg = migrations.alembic_config("sqlite://")
    assert cfg.get_main_option("script_location") == str(packaged.resolve())
    assert cfg.config_file_name is None  # a wheel ships no alembic.ini


def _tables(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_upgrade_downgrade_upgrade_leaves_optuna_alone(db_url: str) -> None:
    assert current(db_url) is None
    upgrade(db_url)
    assert current(db_url) is not None
    tables = _tables(db_url)
    assert tables >= REGTUNE_TABLES
    assert {"studies", "trials", "alembic_version"} <= tables  # Optuna's schema came first
    optuna_tables = {t for t in tables if not t.startswith("regtune_")}

    storage = normalize_url(db_url)
    study = optuna.create_study(study_name="kept", storage=storage)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)

    downgrade(db_url, "base")
    after = _tables(db_url)
    assert not after & REGTUNE_TABLES
    assert optuna_tables <= after  # Optuna's tables and data survive regtune's downgrade
    assert len(optuna.load_study(study_name="kept", storage=storage).trials) == 2

    upgrade(db_url)
    assert _tables(db_url) >= REGTUNE_TABLES
    assert len(optuna.load_study(study_name="kept", storage=storage).trials) == 2


def test_migrations_match_models_and_ignore_optuna_tables(migrated_db_url: str) -> None:
    """Autogenerate against the migrated database proposes nothing at all.

    In particular no `remove_table` for Optuna's tables: regtune's env.py filters them out.
    """
    engine = make_engine(migrated_db_url)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(
                conn,
                opts={
                    "version_table": VERSION_TABLE,
                    "include_name": include_name,
                    "include_object": include_object,
                    "compare_type": True,
                },
            )
            assert compare_metadata(ctx, Base.metadata) == []
            # control: without the filters, autogenerate would drop Optuna's tables
            unfiltered = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
            removed = {d[1].name for d in compare_metadata(unfiltered, Base.metadata)}
            assert {"studies", "trials", "alembic_version"} <= removed
    finally:
        engine.dispose()


def test_trial_results_view_returns_one_row_per_trial(migrated_db_url: str) -> None:
    engine = make_engine(migrated_db_url)
    try:
        with engine.begin() as conn:
            study_id = conn.execute(
                insert(StudyRecord)
                .values(
                    name="v",
                    trainer="digits-mlp",
                    spec={},
                    status="running",
                    metric="val_loss",
                    direction="minimize",
                    n_trials=2,
                    n_complete=0,
                    n_pruned=0,
                    n_failed=0,
                    n_running=0,
                    consecutive_failures=0,
                    created_at=utcnow(),
                    updated_at=utcnow(),
                )
                .returning(StudyRecord.id)
            ).scalar_one()
            for number, (dropout, value) in enumerate([(0.1, 0.5), (0.3, 0.4)]):
                conn.execute(
                    insert(TrialRecord).values(
                        study_id=study_id,
                        number=number,
                        state="complete",
                        dropout=dropout,
                        batch_size=32,
                        value=value,
                        val_loss=value,
                        epochs_run=3,
                        claimed_at=utcnow(),
                    )
                )
        with engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT study, trainer, trial, state, dropout, batch_size, value, epochs_run "
                    "FROM regtune_trial_results WHERE study = 'v' ORDER BY value"
                )
            ).all()
    finally:
        engine.dispose()
    assert [tuple(r) for r in rows] == [
        ("v", "digits-mlp", 1, "complete", 0.3, 32, 0.4, 3),
        ("v", "digits-mlp", 0, "complete", 0.1, 32, 0.5, 3),
    ]


def test_trial_results_view_shows_role_seed_and_regularization_metrics(
    migrated_db_url: str,
) -> None:
    """Migration 0004: a confirm repeat names the search trial it repeats, with its own seed."""
    engine = make_engine(migrated_db_url)
    try:
        with engine.begin() as conn:
            study_id = conn.execute(
                insert(StudyRecord)
                .values(
                    name="r",
                    trainer="digits-mlp",
                    spec={},
                    status="running",
                    metric="val_loss",
                    direction="minimize",
                    n_trials=1,
                    n_complete=0,
                    n_pruned=0,
                    n_failed=0,
                    n_running=0,
                    consecutive_failures=0,
                    created_at=utcnow(),
                    updated_at=utcnow(),
                )
                .returning(StudyRecord.id)
            ).scalar_one()
            rows: list[dict[str, Any]] = [
                {"number": 0, "train_seed": 7},  # role defaults to search
                {"number": 1, "role": "confirm", "repeat_of": 0, "train_seed": 8},
                {"number": 2, "role": "reference", "train_seed": 7},
            ]
            for row in rows:
                conn.execute(
                    insert(TrialRecord).values(
                        study_id=study_id,
                        state="complete",
                        epochs_run=1,
                        val_nll=0.5,
                        near_zero_frac=0.25,
                        weight_l2=3.0,
                        claimed_at=utcnow(),
                        **row,
                    )
                )
        with engine.connect() as conn:
            got = conn.execute(
                text(
                    "SELECT trial, role, repeat_of, train_seed, val_nll, near_zero_frac, "
                    "weight_l2 FROM regtune_trial_results WHERE study = 'r' ORDER BY trial"
                )
            ).all()
    finally:
        engine.dispose()
    assert [tuple(r) for r in got] == [
        (0, "search", None, 7, 0.5, 0.25, 3.0),
        (1, "confirm", 0, 8, 0.5, 0.25, 3.0),
        (2, "reference", None, 7, 0.5, 0.25, 3.0),
    ]


def test_downgrade_from_0004_restores_the_old_view(db_url: str) -> None:
    upgrade(db_url)
    downgrade(db_url, "0003")
    engine = make_engine(db_url)
    try:
        columns = {c["name"] for c in inspect(engine).get_columns("regtune_trials")}
        with engine.connect() as conn:
            conn.execute(text("SELECT trial, val_ece FROM regtune_trial_results")).all()
    finally:
        engine.dispose()
    assert not columns & {"role", "train_seed", "repeat_of", "val_nll"}
    upgrade(db_url)
