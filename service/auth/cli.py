"""`regtune token create|list|revoke`: manage API tokens directly in the database.

These commands need database access, not a running server (and not a token): whoever can reach
the database already controls the service.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Annotated, NoReturn

import typer
from pydantic import ValidationError
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from service.auth import service
from service.auth.service import TokenInfo, TokenScope
from service.cli._common import DbUrlOpt, FormatOpt, JsonAliasOpt, OutputFormat, output_format
from service.config import Settings
from service.db import make_engine, make_session_factory, unit_of_work
from service.errors import RegtuneError, first_line

__all__ = ["token_app"]

token_app = typer.Typer(
    help="API tokens (stored hashed; the secret is shown once).", no_args_is_help=True
)


def _fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


@contextmanager
def _session(database_url: str | None) -> Iterator[Session]:
    try:
        settings = Settings(database_url=database_url) if database_url else Settings()
    except ValidationError as exc:
        _fail(f"invalid setting: {exc.errors()[0]['msg']}")
    if settings.should_auto_migrate:  # a fresh SQLite file gets its schema, as `serve` does
        from service.migrations import upgrade

        try:
            upgrade(settings.database_url)
        except SQLAlchemyError as exc:
            _fail(f"cannot open the database ({exc.__class__.__name__}): {first_line(exc)}")
    engine = make_engine(settings.database_url)
    try:
        with unit_of_work(make_session_factory(engine)) as session:
            yield session
    except RegtuneError as exc:
        _fail(exc.message)
    except SQLAlchemyError as exc:
        _fail(
            f"database error ({exc.__class__.__name__}): {first_line(exc)}; is the schema "
            "migrated (`regtune db upgrade`)?"
        )
    finally:
        engine.dispose()


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def _as_dict(info: TokenInfo) -> dict[str, str | None]:
    return {
        "name": info.name,
        "scope": info.scope.value,
        "created_at": info.created_at.isoformat(),
        "last_used_at": info.last_used_at.isoformat() if info.last_used_at else None,
        "revoked_at": info.revoked_at.isoformat() if info.revoked_at else None,
    }


@token_app.command("create")
def create(
    name: Annotated[str, typer.Option("--name", help="unique name, e.g. ci or alice")],
    scope: Annotated[
        TokenScope, typer.Option("--scope", help="read: GET endpoints; write: everything")
    ] = TokenScope.read,
    database_url: DbUrlOpt = None,
    format: FormatOpt = OutputFormat.text,
    as_json: JsonAliasOpt = False,
) -> None:
    """Create a token and print its secret (once: only its hash is stored)."""
    with _session(database_url) as session:
        try:
            info, secret = service.create_token(session, name, scope)
        except ValueError as exc:
            _fail(f"--name: {exc}")
    if output_format(format, as_json) == OutputFormat.json:
        typer.echo(json.dumps({**_as_dict(info), "token": secret}))
        return
    typer.echo(
        f"created {info.scope.value} token {info.name!r}. Copy the secret now, it is not shown "
        "again (clients: --token or REGTUNE_TOKEN):",
        err=True,
    )
    typer.echo(secret)


@token_app.command("list")
def list_(
    database_url: DbUrlOpt = None,
    format: FormatOpt = OutputFormat.text,
    as_json: JsonAliasOpt = False,
) -> None:
    """List tokens: name, scope, created, last used, revoked (never secrets)."""
    with _session(database_url) as session:
        tokens = service.list_tokens(session)
    if output_format(format, as_json) == OutputFormat.json:
        typer.echo(json.dumps([_as_dict(t) for t in tokens], indent=2))
        return
    if not tokens:
        typer.echo("no tokens (create one: regtune token create --name NAME --scope write)")
        return
    typer.echo(f"{'NAME':<24} {'SCOPE':<6} {'CREATED':<20} {'LAST USED':<20} REVOKED")
    for t in tokens:
        typer.echo(
            f"{t.name:<24} {t.scope.value:<6} {_when(t.created_at):<20} "
            f"{_when(t.last_used_at):<20} {_when(t.revoked_at)}"
        )


@token_app.command("revoke")
def revoke(
    name: Annotated[str, typer.Argument(metavar="NAME", help="the token's name")],
    database_url: DbUrlOpt = None,
) -> None:
    """Revoke a token: requests that present it get 401 from now on."""
    with _session(database_url) as session:
        info = service.revoke_token(session, name)
    typer.echo(f"revoked token {info.name!r} ({info.scope.value}) at {_when(info.revoked_at)}")
