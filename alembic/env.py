"""Alembic environment for regtune's own tables.

The database is shared with Optuna's RDBStorage, which has its own Alembic history in the default
`alembic_version` table. This environment therefore:

- keeps its history in `regtune_alembic_version`;
- looks only at tables prefixed `regtune_` (autogenerate never proposes touching Optuna's tables);
- renders batch operations on SQLite (ALTER TABLE there cannot change most things in place).

The URL comes, in order, from `config.attributes["url"]` (set by `service.migrations`), the
`sqlalchemy.url` option, or the `REGTUNE_DATABASE_URL` setting.
"""

from __future__ import annotations

from logging.config import fileConfig
from typing import Any

from sqlalchemy import Connection

from alembic import context
from service.db import make_engine, normalize_url
from service.migrations import VERSION_TABLE, include_name, include_object
from service.models import Base

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata


def _url() -> str:
    url = config.attributes.get("url") or config.get_main_option("sqlalchemy.url")
    if not url:
        from service.config import get_settings

        url = get_settings().database_url
    return normalize_url(str(url))


def _configure(**kwargs: Any) -> None:
    context.configure(
        target_metadata=target_metadata,
        version_table=VERSION_TABLE,
        include_name=include_name,
        include_object=include_object,
        compare_type=True,
        **kwargs,
    )


def run_migrations_offline() -> None:
    url = _url()
    _configure(
        url=url,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        render_as_batch=url.startswith("sqlite"),
    )
    with context.begin_transaction():
        context.run_migrations()


def _run_with(connection: Connection) -> None:
    _configure(connection=connection, render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run_with(connection)
        return
    engine = make_engine(_url())
    try:
        with engine.connect() as conn:
            _run_with(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
