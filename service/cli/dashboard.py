"""optuna-dashboard: its own command, or beside the API (`serve --optuna-dashboard-port`)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from service.cli._common import DbUrlOpt, app, configure_logging, fail, settings_from
from service.config import Settings

__all__ = [
    "OptunaDashboardHostOpt",
    "OptunaDashboardPortOpt",
    "optuna_dashboard_command",
    "start_beside",
]


OptunaDashboardPortOpt = Annotated[
    int | None,
    typer.Option(
        "--optuna-dashboard-port",
        min=1,
        max=65535,
        help="also run optuna-dashboard on this port (same database; study pages link to it)",
    ),
]
OptunaDashboardHostOpt = Annotated[
    str,
    typer.Option(
        "--optuna-dashboard-host",
        help="optuna-dashboard bind address; it has NO authentication, keep it on loopback",
    ),
]


def start_beside(api: Any, settings: Settings, host: str, port: int) -> Any:
    """optuna-dashboard in a thread of the API process (`serve --optuna-dashboard-port`)."""
    from service.dashboard import optuna_dashboard

    try:
        return optuna_dashboard.beside(
            api, settings.database_url, host, port, lambda m: typer.echo(m, err=True)
        )
    except OSError as exc:
        fail(f"cannot start optuna-dashboard on {host}:{port}: {exc.strerror or exc}")


@app.command("optuna-dashboard")
def optuna_dashboard_command(
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="port")] = 8081,
    host: Annotated[
        str, typer.Option("--host", help="bind address; optuna-dashboard has NO authentication")
    ] = "127.0.0.1",
    database_url: DbUrlOpt = None,
) -> None:
    """Run optuna-dashboard on regtune's database (loopback by default: it has no auth)."""
    from service.dashboard import optuna_dashboard

    settings = settings_from(database_url=database_url)
    configure_logging(settings)
    try:
        optuna_dashboard.run_forever(
            settings.database_url, host, port, lambda m: typer.echo(m, err=True)
        )
    except OSError as exc:
        fail(f"cannot start optuna-dashboard on {host}:{port}: {exc.strerror or exc}")
