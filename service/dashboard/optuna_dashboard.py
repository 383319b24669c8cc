"""optuna-dashboard beside the API: same database, its own port, loopback by default.

Its prebuilt UI only works at the root of its own origin and it has no authentication (while it
can delete studies and tell trials), so it gets its own port and binds 127.0.0.1 unless told
otherwise — with a loud warning then. Its storage is `optuna.storages.get_storage(...)`'s cached
wrapper: a plain RDBStorage reloads every trial on each of the UI's polls.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import optuna
from fastapi import FastAPI

from service.config import LOOPBACK_HOSTS
from service.db import engine_kwargs, normalize_url

__all__ = [
    "Link",
    "OptunaDashboard",
    "beside",
    "is_loopback",
    "open_storage",
    "run_forever",
    "start",
    "warning_for",
]

log = logging.getLogger("regtune.optuna_dashboard")


def is_loopback(host: str) -> bool:
    return host in LOOPBACK_HOSTS or host.startswith("127.")


def warning_for(host: str, port: int) -> str | None:
    """The warning to print when optuna-dashboard would be reachable from other machines."""
    if is_loopback(host):
        return None
    return (
        f"WARNING: optuna-dashboard listens on {host}:{port} WITHOUT AUTHENTICATION; anyone who "
        "reaches that port can read, rename and DELETE studies in this database. Bind it to "
        "127.0.0.1 (the default) or put an authenticating proxy in front."
    )


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """Optuna's cached storage over the shared database (schema created by `db upgrade`)."""
    url = normalize_url(url)
    rdb = optuna.storages.RDBStorage(
        url, engine_kwargs=engine_kwargs(url), skip_table_creation=True
    )
    return optuna.storages.get_storage(rdb)


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        log.debug("optuna-dashboard: " + format, *args)


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    # one slow request (a large study's first load) must not block the UI's other polls
    daemon_threads = True


@dataclass(frozen=True)
class Link:
    """Where the study pages point their "Open in optuna-dashboard" link (`app.state`)."""

    host: str
    port: int


@dataclass
class OptunaDashboard:
    """A running optuna-dashboard server; `stop()` shuts it down."""

    host: str
    port: int
    server: WSGIServer
    thread: threading.Thread

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/dashboard"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


def start(database_url: str, host: str = "127.0.0.1", port: int = 8081) -> OptunaDashboard:
    """Serve optuna-dashboard on `host:port` in a background thread.

    Raises:
        OSError: the address cannot be bound (port in use, unknown host).
    """
    from optuna_dashboard import wsgi

    app = wsgi(open_storage(database_url))
    server = make_server(
        host, port, app, server_class=_ThreadingWSGIServer, handler_class=_QuietHandler
    )
    thread = threading.Thread(target=server.serve_forever, name="optuna-dashboard", daemon=True)
    thread.start()
    return OptunaDashboard(host, server.server_port, server, thread)


def _announce(server: OptunaDashboard, echo: Callable[[str], None]) -> None:
    echo(f"optuna-dashboard at {server.url} (same database, no authentication)")
    warning = warning_for(server.host, server.port)
    if warning:
        log.warning(warning)
        echo(warning)


def beside(
    app: FastAPI, database_url: str, host: str, port: int, echo: Callable[[str], None]
) -> OptunaDashboard:
    """Start optuna-dashboard next to the API `app` and make the study pages link to it."""
    server = start(database_url, host, port)
    app.state.optuna_dashboard = Link(host, server.port)
    _announce(server, echo)
    return server


def run_forever(database_url: str, host: str, port: int, echo: Callable[[str], None]) -> None:
    """`regtune optuna-dashboard`: serve until interrupted (Ctrl-C / SIGTERM)."""
    server = start(database_url, host, port)
    _announce(server, echo)
    try:
        server.thread.join()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
