"""Apply regtune's database migrations (and make sure Optuna's schema exists first).

Optuna's RDBStorage and regtune's tables share one database. Optuna creates and migrates its own
tables (its history lives in `alembic_version`); regtune's Alembic history lives in
`regtune_alembic_version` and touches only tables prefixed `regtune_`.

Call `upgrade(url)` once before any worker starts: concurrent first-time creation of Optuna's
schema races (optuna#4621), so workers open the storage with ``skip_table_creation=True``.

The migration scripts' source of truth is the repository's top-level `alembic/` directory. The
wheel carries a copy of it as `service/_migrations` (see pyproject.toml); `script_location()`
finds whichever of the two this installation has.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import optuna
from alembic.config import Config
from alembic.runtime.migration import MigrationContext

from alembic import command
from service.db import engine_kwargs, make_engine, normalize_url

__all__ = [
    "VERSION_TABLE",
    "MigrationsNotFoundError",
    "alembic_config",
    "current",
    "downgrade",
    "ensure_optuna_schema",
    "include_name",
    "include_object",
    "script_location",
    "upgrade",
]

VERSION_TABLE = "regtune_alembic_version"
TABLE_PREFIX = "regtune_"
# Where the wheel puts the repository's alembic/ (pyproject.toml maps the directory there).
PACKAGED_SCRIPTS = "_migrations"


class MigrationsNotFoundError(RuntimeError):
    """Neither the packaged copy of the migration scripts nor the source tree's is present."""


def include_name(name: str | None, type_: str, parent_names: Mapping[str, Any]) -> bool:
    """Alembic filter: reflect only regtune's tables (Optuna's live in the same schema)."""
    if type_ == "table":
        return name is not None and name.startswith(TABLE_PREFIX)
    return True


def include_object(
    obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
) -> bool:
    """Alembic filter: the same rule for objects reached other than by table-name reflection."""
    if type_ == "table":
        return name is not None and name.startswith(TABLE_PREFIX)
    return True


def _is_script_dir(path: Path) -> bool:
    return (path / "env.py").is_file() and (path / "versions").is_dir()


def script_location() -> Path:
    """The directory holding regtune's `env.py` and `versions/`.

    A regular install (wheel, `pip install .`) has them inside the package as
    `service/_migrations`. An editable install or a source checkout has no such directory (the
    editable finder maps only importable modules) and uses the repository's `alembic/` instead.
    """
    package = resources.files("service")
    if not isinstance(package, Path):  # a zip import; Alembic needs real files
        raise MigrationsNotFoundError(
            f"regtune is installed as {package}; its migrations need a regular file-system install"
        )
    for candidate in (package / PACKAGED_SCRIPTS, package.parent / "alembic"):
        # `_is_script_dir` also rejects site-packages/alembic (the Alembic library itself)
        if _is_script_dir(candidate):
            return candidate.resolve()
    raise MigrationsNotFoundError(
        f"regtune's migration scripts are missing: neither {package / PACKAGED_SCRIPTS} nor "
        f"{package.parent / 'alembic'} holds env.py and versions/; reinstall regtune"
    )


def alembic_config(url: str) -> Config:
    """An Alembic `Config` for regtune's history, bound to `url` (normalized)."""
    scripts = script_location()
    # the source tree's alembic.ini (file names for new revisions, ...); a wheel ships none
    ini = scripts.parent / "alembic.ini"
    cfg = Config(str(ini)) if ini.exists() else Config()
    cfg.set_main_option("script_location", str(scripts))
    # the URL travels as an attribute, not an ini option: passwords may contain '%'
    cfg.attributes["url"] = normalize_url(url)
    # leave the host application's logging alone
    cfg.attributes["configure_logger"] = False
    return cfg


def ensure_optuna_schema(url: str) -> None:
    """Create (or migrate) Optuna's tables by opening its RDBStorage once."""
    url = normalize_url(url)
    # the storage logs an INFO line per schema step; those are noise for `regtune db upgrade`
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        storage = optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs(url))
        storage.engine.dispose()
    finally:
        optuna.logging.set_verbosity(level)


def upgrade(url: str, revision: str = "head") -> None:
    """Ensure Optuna's schema, then apply regtune's migrations up to `revision` (default head)."""
    ensure_optuna_schema(url)
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str) -> None:
    """Revert regtune's migrations down to `revision` (``base`` removes every regtune table).

    Optuna's tables are left as they are.
    """
    command.downgrade(alembic_config(url), revision)


def current(url: str) -> str | None:
    """The applied regtune revision, or None when regtune's migrations were never applied."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
            return ctx.get_current_revision()
    finally:
        engine.dispose()


logging.getLogger("alembic.runtime.migration").setLevel(logging.WARNING)
