"""Is the database's regtune schema at this release's migration head? (`/healthz`, start-up)

A database nobody ran `regtune db upgrade` on (or one an older release migrated) answers simple
queries, so a plain ping calls it healthy while every route fails. This compares the revision in
regtune's Alembic version table with the head of the installed migration scripts.
"""

from __future__ import annotations

import logging

from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from service.migrations import VERSION_TABLE, MigrationsNotFoundError, alembic_config

__all__ = ["SchemaCheck"]

log = logging.getLogger(__name__)

UPGRADE_HINT = "run `regtune db upgrade`"


class SchemaCheck:
    """The schema problem of one database, or None.

    Once the schema is found at head the answer is cached (a migration never goes backwards
    under a running server); until then every call reads the version table again (one query),
    so `/healthz` turns healthy as soon as someone runs the upgrade.
    """

    def __init__(self, engine: Engine, url: str) -> None:
        self._engine = engine
        self._url = url
        self._head: str | None = None
        self._ok = False

    def _head_revision(self) -> str | None:
        if self._head is None:
            self._head = ScriptDirectory.from_config(alembic_config(self._url)).get_current_head()
        return self._head

    def problem(self) -> str | None:
        """None when regtune's schema is at head; else what is wrong and what to run.

        A database that does not answer is not reported here (the caller's ping says so).
        """
        if self._ok:
            return None
        try:
            head = self._head_revision()
        except MigrationsNotFoundError as exc:
            return str(exc)
        try:
            with self._engine.connect() as conn:
                ctx = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
                current = ctx.get_current_revision()
        except SQLAlchemyError:
            return None
        if current == head:
            self._ok = True
            return None
        if current is None:
            return f"schema missing (regtune's tables were never created): {UPGRADE_HINT}"
        return f"schema outdated (revision {current}, this release needs {head}): {UPGRADE_HINT}"
