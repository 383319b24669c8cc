"""The `regtune` command line: serve, worker, submit, status, best, cancel, presets, db upgrade.

Client commands talk HTTP to ``--server`` (default ``REGTUNE_SERVER_URL``) with ``--token``
(``REGTUNE_TOKEN``) as a Bearer token. Human output by default, ``--format json`` for scripts.
Every failure is one ``error: ...`` line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import enum
import json
import logging
import signal
import subprocess
import sys
from types import FrameType
from typing import Annotated, Any, NoReturn

import typer
from pydantic import ValidationError

from service.auth.cli import token_app
from service.client import ApiClient, ClientError
from service.config import Settings
from service.presets.cli import print_presets
from service.spec import SpecFileError, load_spec_file
from service.tune import tune_command

app = typer.Typer(
    help="regtune: tune the regularization of deep-learning models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Database schema (migrations).", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(token_app, name="token")

log = logging.getLogger("regtune.cli")


class OutputFormat(enum.StrEnum):
    text = "text"
    json = "json"


def _fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _settings(**overrides: Any) -> Settings:
    """Settings from the environment, with the command line's explicit options on top."""
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"])
        _fail(f"invalid setting {field} (REGTUNE_{field.upper()}): {err['msg']}")


ServerOpt = Annotated[
    str | None, typer.Option("--server", help="API base URL [env: REGTUNE_SERVER_URL]")
]
TokenOpt = Annotated[
    str | None,
    typer.Option("--token", help="Bearer token [env: REGTUNE_TOKEN]", show_default=False),
]
FormatOpt = Annotated[
    OutputFormat, typer.Option("--format", "-f", help="text for people, json for scripts")
]
DbUrlOpt = Annotated[
    str | None,
    typer.Option("--database-url", help="database URL [env: REGTUNE_DATABASE_URL]"),
]


def _client(server: str | None, token: str | None) -> ApiClient:
    settings = _settings()
    secret = token or (settings.token.get_secret_value() if settings.token else None)
    return ApiClient(server or settings.server_url, secret)


def _call(server: str | None, token: str | None, method: str, *args: Any) -> dict[str, Any]:
    try:
        with _client(server, token) as client:
            result: dict[str, Any] = getattr(client, method)(*args)
            return result
    except ClientError as exc:
        _fail(str(exc))


def _print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, sort_keys=False))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "-" if value is None else str(value)


def _progress_line(study: dict[str, Any]) -> str:
    p = study.get("progress") or {}
    return (
        f"{p.get('finished', 0)}/{p.get('n_trials', '?')} finished "
        f"({p.get('complete', 0)} complete, {p.get('pruned', 0)} pruned), "
        f"{p.get('failed', 0)} failed, {p.get('running', 0)} running"
    )


def _print_study(study: dict[str, Any]) -> None:
    typer.echo(f"study {study['id']} {study['name']!r} ({study.get('trainer')}): {study['status']}")
    typer.echo(f"  progress: {_progress_line(study)}")
    if study.get("best_value") is not None:
        typer.echo(
            f"  best:     {study.get('metric')} = {_fmt(study['best_value'])} "
            f"(trial {study.get('best_trial_number')}, {study.get('direction')})"
        )
    if study.get("error"):
        typer.echo(f"  note:     {study['error']}")


# --- client commands ---------------------------------------------------------------------------


@app.command()
def submit(
    spec: Annotated[str, typer.Argument(help="study spec file (YAML or JSON)")],
    server: ServerOpt = None,
    token: TokenOpt = None,
    format: FormatOpt = OutputFormat.text,
) -> None:
    """Submit a study spec; prints the new study's id."""
    try:
        body = load_spec_file(spec)
    except SpecFileError as exc:
        _fail(str(exc))
    study = _call(server, token, "submit", body)
    if format == OutputFormat.json:
        _print_json(study)
    else:
        typer.echo(f"submitted study {study['id']} {study['name']!r}: {study['status']}")


@app.command()
def status(
    study_id: Annotated[int, typer.Argument(metavar="ID", help="study id")],
    server: ServerOpt = None,
    token: TokenOpt = None,
    format: FormatOpt = OutputFormat.text,
) -> None:
    """Show a study's status, progress and best value."""
    study = _call(server, token, "study", study_id)
    if format == OutputFormat.json:
        _print_json(study)
    else:
        _print_study(study)


@app.command()
def best(
    study_id: Annotated[int, typer.Argument(metavar="ID", help="study id")],
    server: ServerOpt = None,
    token: TokenOpt = None,
    format: FormatOpt = OutputFormat.text,
) -> None:
    """Show the best trial: its regularization parameters and metrics."""
    result = _call(server, token, "best", study_id)
    if format == OutputFormat.json:
        _print_json(result)
        return
    final = "final" if result.get("final") else "may still improve"
    typer.echo(
        f"study {result['study_id']} {result['study']!r} ({result['status']}, {final}): "
        f"best {result['metric']} = {_fmt(result['value'])} at trial {result['trial_number']}"
    )
    typer.echo("  params:")
    for name, value in (result.get("params") or {}).items():
        typer.echo(f"    {name:<16}{_fmt(value)}")
    typer.echo(f"  best epoch: {_fmt(result.get('best_epoch'))} of {result.get('epochs_run')}")
    for title, key in (("metrics", "metrics"), ("test metrics", "test_metrics")):
        metrics = result.get(key)
        if metrics:
            typer.echo(f"  {title}: " + ", ".join(f"{k}={_fmt(v)}" for k, v in metrics.items()))


@app.command()
def cancel(
    study_id: Annotated[int, typer.Argument(metavar="ID", help="study id")],
    server: ServerOpt = None,
    token: TokenOpt = None,
    format: FormatOpt = OutputFormat.text,
) -> None:
    """Cancel a study: no new trials; running ones stop at their next epoch."""
    study = _call(server, token, "cancel", study_id)
    if format == OutputFormat.json:
        _print_json(study)
    else:
        typer.echo(f"study {study['id']} {study['name']!r}: {study['status']}")


# --- processes ---------------------------------------------------------------------------------


@app.command()
def worker(
    study: Annotated[int | None, typer.Option("--study", help="only run this study")] = None,
    once: Annotated[bool, typer.Option("--once", help="run at most one trial, then exit")] = False,
    max_trials: Annotated[
        int | None, typer.Option("--max-trials", min=1, help="exit after N trials")
    ] = None,
    exit_when_idle: Annotated[
        bool, typer.Option("--exit-when-idle", help="exit when no study has a free slot")
    ] = False,
    devices: Annotated[
        str | None,
        typer.Option("--devices", help="'auto', 'cpu' or GPU indices (0,1): a process each"),
    ] = None,
    trials_per_device: Annotated[
        int, typer.Option("--trials-per-device", min=1, help="worker processes per device")
    ] = 1,
    accelerator: Annotated[
        str, typer.Option("--accelerator", help="Lightning accelerator: cpu, gpu or auto")
    ] = "cpu",
    devices_per_trial: Annotated[
        int,
        typer.Option(
            "--devices-per-trial",
            min=1,
            max=64,
            help="devices each trial trains on (Lightning DDP when > 1; rank 0 reports)",
        ),
    ] = 1,
    allow_cpu_fallback: Annotated[
        bool,
        typer.Option(
            "--allow-cpu-fallback",
            help="train on the CPU when a listed GPU is unusable (default: fail at start)",
        ),
    ] = False,
    database_url: DbUrlOpt = None,
) -> None:
    """Run trials: claim a slot in the oldest study that needs one, train, record, repeat."""
    from service.worker import WorkerOptions, run_worker
    from service.worker.devices import (
        CPU,
        DeviceError,
        check_gpus,
        group_devices,
        guard_gpu_memory,
        parse_devices,
        run_children,
        share_gpu_memory,
    )

    settings = _settings(database_url=database_url)
    _configure_logging(settings)
    try:
        device_list = group_devices(
            check_gpus(parse_devices(devices), allow_cpu_fallback), devices_per_trial
        )
    except DeviceError as exc:
        _fail(str(exc))
    if devices is not None and (device_list != [CPU] or trials_per_device > 1):
        args = _worker_args(study, once, max_trials, exit_when_idle)
        args += ["--devices-per-trial", str(devices_per_trial)]
        env = share_gpu_memory(_child_env(settings), trials_per_device)
        raise typer.Exit(run_children(device_list, trials_per_device, args, env))
    if devices is None and trials_per_device > 1:
        args = _worker_args(study, once, max_trials, exit_when_idle)
        raise typer.Exit(run_children([CPU], trials_per_device, args, _child_env(settings)))
    options = WorkerOptions(
        study_id=study,
        once=once,
        max_trials=max_trials,
        exit_when_idle=exit_when_idle,
        accelerator=accelerator,
        devices_per_trial=devices_per_trial,
    )
    guard_gpu_memory(settings.gpu_memory_fraction)
    try:
        run_worker(settings, options)
    except Exception as exc:  # the database is unreachable, the schema is missing, ...
        log.debug("worker crashed", exc_info=True)
        _fail(f"worker stopped: {exc.__class__.__name__}: {str(exc).splitlines()[0]}")


def _worker_args(
    study: int | None, once: bool, max_trials: int | None, exit_when_idle: bool
) -> list[str]:
    args: list[str] = []
    if study is not None:
        args += ["--study", str(study)]
    if once:
        args.append("--once")
    if max_trials is not None:
        args += ["--max-trials", str(max_trials)]
    if exit_when_idle:
        args.append("--exit-when-idle")
    return args


def _child_env(settings: Settings) -> dict[str, str]:
    import os

    env = dict(os.environ)
    env["REGTUNE_DATABASE_URL"] = settings.database_url
    env.setdefault("TZ", "UTC")
    return env


def _configure_logging(settings: Settings) -> None:
    from service.observability import configure_logging

    configure_logging(settings.log_format)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option("--host", help="bind address [REGTUNE_HOST]")] = None,
    port: Annotated[
        int | None, typer.Option("--port", help="port [REGTUNE_PORT]", min=1, max=65535)
    ] = None,
    workers: Annotated[
        int, typer.Option("--workers", min=0, help="local worker processes (0: API only)")
    ] = 1,
    database_url: DbUrlOpt = None,
    optuna_dashboard_port: OptunaDashboardPortOpt = None,
    optuna_dashboard_host: OptunaDashboardHostOpt = "127.0.0.1",
) -> None:
    """Serve the REST API and dashboard, with N local worker processes (the one-command mode)."""
    import uvicorn

    from service.app import create_app
    from service.worker.devices import share_cpu_threads

    settings = _settings(database_url=database_url, host=host, port=port)
    _configure_logging(settings)
    if settings.should_auto_migrate:
        _upgrade(settings.database_url)
    url = f"http://{settings.host}:{settings.port}"
    children: list[subprocess.Popen[bytes]] = []
    side: Any = None  # optuna-dashboard beside the API (service.dashboard.optuna_dashboard)
    try:
        env = share_cpu_threads(_child_env(settings), workers)
        for _ in range(workers):
            cmd = [sys.executable, "-m", "service.cli", "worker"]
            children.append(subprocess.Popen(cmd, env=env))
        typer.echo(f"regtune API at {url} (docs: {url}/docs), {workers} worker(s)", err=True)
        typer.echo(
            f"  try: curl -X POST {url}/api/v1/studies -H 'Content-Type: application/json' "
            "-d @examples/quick.json",
            err=True,
        )
        api = create_app(settings)
        if optuna_dashboard_port is not None:
            side = _start_optuna_dashboard(
                api, settings, optuna_dashboard_host, optuna_dashboard_port
            )
        config = uvicorn.Config(api, host=settings.host, port=settings.port, log_config=None)
        # uvicorn re-raises SIGTERM/SIGINT after its graceful shutdown; with the default handler
        # that would kill this process before the workers are stopped
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, _exit_on_signal)
        uvicorn.Server(config).run()
    finally:
        _stop_children(children)
        if side is not None:
            side.stop()


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


def _start_optuna_dashboard(api: Any, settings: Settings, host: str, port: int) -> Any:
    from service.dashboard import optuna_dashboard

    try:
        return optuna_dashboard.beside(
            api, settings.database_url, host, port, lambda m: typer.echo(m, err=True)
        )
    except OSError as exc:
        _fail(f"cannot start optuna-dashboard on {host}:{port}: {exc.strerror or exc}")


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

    settings = _settings(database_url=database_url)
    _configure_logging(settings)
    try:
        optuna_dashboard.run_forever(
            settings.database_url, host, port, lambda m: typer.echo(m, err=True)
        )
    except OSError as exc:
        _fail(f"cannot start optuna-dashboard on {host}:{port}: {exc.strerror or exc}")


def _exit_on_signal(_signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(0)


def _stop_children(children: list[subprocess.Popen[bytes]], timeout: float = 30.0) -> None:
    """SIGTERM each worker (it abandons its trial cleanly), then wait; SIGKILL stragglers."""
    for child in children:
        if child.poll() is None:
            child.terminate()
    for child in children:
        try:
            child.wait(timeout)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def _upgrade(url: str) -> None:
    from service.migrations import upgrade

    try:
        upgrade(url)
    except Exception as exc:
        reason = (str(exc).splitlines() or [""])[0]
        _fail(_hide_password(f"cannot migrate {url}: {exc.__class__.__name__}: {reason}", url))


@db_app.command("upgrade")
def db_upgrade(database_url: DbUrlOpt = None) -> None:
    """Create or migrate the database schema (Optuna's and regtune's tables)."""
    settings = _settings(database_url=database_url)
    _upgrade(settings.database_url)
    typer.echo(f"database is up to date: {_redact(settings.database_url)}")


def _redact(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url


def _hide_password(text: str, url: str) -> str:
    """`text` with `url` redacted and no copy of its password left (drivers quote it too)."""
    from urllib.parse import quote, quote_plus

    from sqlalchemy.engine import make_url

    text = text.replace(url, _redact(url))
    try:
        password = make_url(url).password
    except Exception:
        return text
    if password:
        for spelling in {str(password), quote(str(password), safe=""), quote_plus(str(password))}:
            text = text.replace(spelling, "***")
    return text


@app.command()
def presets(format: FormatOpt = OutputFormat.text) -> None:
    """List the named search-space presets a spec can use (search_space: {preset: NAME})."""
    print_presets(as_json=format == OutputFormat.json)


# the CI job contract lives in service.tune
app.command("tune")(tune_command)


if __name__ == "__main__":
    app()
