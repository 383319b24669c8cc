"""Process commands: `serve` (API plus supervised local workers), `worker`, `db upgrade`.

Local worker processes are started, restarted after a crash and stopped by
`service.supervise.Supervisor`; `serve` counts restarts in its /metrics.
"""

from __future__ import annotations

import signal
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any

import typer

from service.cli._common import (
    DbUrlOpt,
    app,
    child_env,
    configure_logging,
    db_app,
    fail,
    log,
    settings_from,
)
from service.cli.dashboard import OptunaDashboardHostOpt, OptunaDashboardPortOpt, start_beside

if TYPE_CHECKING:
    from service.config import Settings

__all__ = ["db_upgrade", "serve", "worker"]


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

    settings = settings_from(database_url=database_url)
    configure_logging(settings)
    if accelerator not in ACCELERATORS:  # before a typo fails trials of someone's study
        fail(f"--accelerator {accelerator!r}: use one of {', '.join(ACCELERATORS)}")
    if study is not None:
        _check_study_exists(settings, study)
    try:
        device_list = group_devices(
            check_gpus(parse_devices(devices), allow_cpu_fallback), devices_per_trial
        )
    except DeviceError as exc:
        fail(str(exc))
    if devices is not None and (device_list != [CPU] or trials_per_device > 1):
        args = _worker_args(study, once, max_trials, exit_when_idle)
        args += ["--devices-per-trial", str(devices_per_trial)]
        env = share_gpu_memory(child_env(settings), trials_per_device)
        raise typer.Exit(run_children(device_list, trials_per_device, args, env))
    if devices is None and trials_per_device > 1:
        args = _worker_args(study, once, max_trials, exit_when_idle)
        raise typer.Exit(run_children([CPU], trials_per_device, args, child_env(settings)))
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
        import optuna
        from sqlalchemy.exc import SQLAlchemyError

        from service.errors import first_line

        log.debug("worker crashed", exc_info=True)
        hint = ""
        if isinstance(exc, SQLAlchemyError | optuna.exceptions.StorageInternalError):
            hint = "; is the database reachable and its schema migrated (`regtune db upgrade`)?"
        fail(f"worker stopped: {exc.__class__.__name__}: {first_line(exc)}{hint}")


ACCELERATORS = ("cpu", "gpu", "auto")


def _check_study_exists(settings: Settings, study_id: int) -> None:
    """`--study N` names a study (a worker for a typo would idle, or exit 0 having done
    nothing). A database that cannot answer is left to the worker, which reports it."""
    from service.db import make_engine, make_session_factory, unit_of_work
    from service.worker.repository import study_status

    engine = make_engine(settings.database_url)
    try:
        with unit_of_work(make_session_factory(engine)) as session:
            status = study_status(session, study_id)
    except Exception:
        return
    finally:
        engine.dispose()
    if status is None:
        fail(f"--study {study_id}: no such study")


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
    from service.observability.metrics import worker_restarts_counter
    from service.supervise import ChildSpec, Supervisor, worker_command
    from service.worker.devices import share_cpu_threads

    settings = settings_from(database_url=database_url, host=host, port=port)
    configure_logging(settings)
    if settings.should_auto_migrate:
        _upgrade(settings.database_url)
    _check_port(settings.host, settings.port)  # before any worker starts
    url = f"http://{settings.host}:{settings.port}"
    side: Any = None  # optuna-dashboard beside the API (service.dashboard.optuna_dashboard)
    env = share_cpu_threads(child_env(settings), workers)
    supervisor = Supervisor(
        [ChildSpec(worker_command(), env, f"worker {i}") for i in range(workers)]
    )
    try:
        supervisor.start()
        typer.echo(f"regtune API at {url} (docs: {url}/docs), {workers} worker(s)", err=True)
        typer.echo(
            f"  try: curl -X POST {url}/api/v1/studies -H 'Content-Type: application/json' "
            "-d @examples/quick.json",
            err=True,
        )
        api = create_app(settings)
        restarts = worker_restarts_counter(api)
        supervisor.on_restart = lambda _label, _code: restarts.inc()
        supervisor.watch()
        if optuna_dashboard_port is not None:
            side = start_beside(api, settings, optuna_dashboard_host, optuna_dashboard_port)
        config = uvicorn.Config(api, host=settings.host, port=settings.port, log_config=None)
        # uvicorn re-raises SIGTERM/SIGINT after its graceful shutdown; with the default handler
        # that would kill this process before the workers are stopped
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, _exit_on_signal)
        uvicorn.Server(config).run()
    finally:
        supervisor.stop()
        if side is not None:
            side.stop()


def _check_port(host: str, port: int) -> None:
    """Fail with one line when `host:port` cannot be listened on (uvicorn would log the error
    and exit 3 after the workers had started). Bound as uvicorn binds (SO_REUSEADDR)."""
    import errno
    import socket

    try:
        family, kind, proto, _name, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM
        )[0]
    except OSError as exc:
        fail(f"--host {host}: {exc.strerror or exc}")
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            # EADDRNOTAVAIL: no interface of this host has that address (the host's fault)
            option = "--host" if exc.errno == errno.EADDRNOTAVAIL else "--port"
            fail(
                f"{option} {host if option == '--host' else port}: cannot listen on "
                f"{host}:{port} ({exc.strerror or exc})"
            )


def _exit_on_signal(_signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(0)


def _upgrade(url: str) -> None:
    from service.migrations import upgrade

    try:
        upgrade(url)
    except Exception as exc:
        from service.errors import first_line

        reason = f"{exc.__class__.__name__}: {first_line(exc)}"
        fail(_hide_password(f"cannot migrate {url}: {reason}", url))


@db_app.command("upgrade")
def db_upgrade(database_url: DbUrlOpt = None) -> None:
    """Create or migrate the database schema (Optuna's and regtune's tables)."""
    settings = settings_from(database_url=database_url)
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
