"""What every `regtune` command shares: the Typer apps, options, settings, `error:` lines."""

from __future__ import annotations

import enum
import json
import logging
import os
from typing import Annotated, Any, NoReturn

import typer
from pydantic import ValidationError

from service.config import Settings

__all__ = [
    "DbUrlOpt",
    "FormatOpt",
    "JsonAliasOpt",
    "OutputFormat",
    "ServerOpt",
    "TokenOpt",
    "app",
    "child_env",
    "configure_logging",
    "db_app",
    "fail",
    "output_format",
    "print_json",
    "settings_from",
]

app = typer.Typer(
    help="regtune: tune the regularization of deep-learning models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Database schema (migrations).", no_args_is_help=True)
app.add_typer(db_app, name="db")

log = logging.getLogger("regtune.cli")


class OutputFormat(enum.StrEnum):
    text = "text"
    json = "json"


def fail(message: str, code: int = 1) -> NoReturn:
    """One `error: ...` line on stderr and exit `code` (never a traceback)."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def settings_from(**overrides: Any) -> Settings:
    """Settings from the environment, with the command line's explicit options on top."""
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"])
        fail(f"invalid setting {field} (REGTUNE_{field.upper()}): {err['msg']}")


ServerOpt = Annotated[
    str | None, typer.Option("--server", help="API base URL \\[env: REGTUNE_SERVER_URL]")
]
TokenOpt = Annotated[
    str | None,
    typer.Option("--token", help="Bearer token \\[env: REGTUNE_TOKEN]", show_default=False),
]
FormatOpt = Annotated[
    OutputFormat, typer.Option("--format", "-f", help="text for people, json for scripts")
]
# the token commands' former spelling, still accepted (hidden from --help)
JsonAliasOpt = Annotated[bool, typer.Option("--json", hidden=True, help="same as --format json")]
DbUrlOpt = Annotated[
    str | None,
    typer.Option("--database-url", help="database URL \\[env: REGTUNE_DATABASE_URL]"),
]


def print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, sort_keys=False))


def output_format(format: OutputFormat, json_alias: bool = False) -> OutputFormat:
    """`--format`, with the hidden `--json` alias folded in."""
    return OutputFormat.json if json_alias else format


def child_env(settings: Settings) -> dict[str, str]:
    """The environment of a local worker process: ours, with the database URL made explicit."""
    env = dict(os.environ)
    env["REGTUNE_DATABASE_URL"] = settings.database_url
    env.setdefault("TZ", "UTC")
    return env


def configure_logging(settings: Settings) -> None:
    from service.observability import configure_logging as configure

    configure(settings.log_format)
