"""The application, assembled above its two sibling parts: the JSON API (`service.api`) and the
web dashboard (`service.dashboard`), which never import each other.

`create_app` wires the lifespan (engine, sessions, optional auto-migrate, schema check), the
middleware (HTTP guard, body limit, metrics), the error handlers and both routers.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from starlette.concurrency import run_in_threadpool

from service import __version__, api, dashboard
from service.api.middleware import BodySizeLimitMiddleware
from service.api.schema import SchemaCheck
from service.api.security import SECURITY_HEADERS, HttpGuardMiddleware
from service.auth.dependencies import (
    AUTH_RESPONSES,
    configure_auth,
    require_token,
    warn_if_no_tokens,
)
from service.config import Settings, get_settings
from service.db import make_engine, make_session_factory
from service.errors import install_error_handlers
from service.observability import configure_logging, install
from service.reliability import StaleTrialSweeper
from service.studies.optuna_storage import LazyOptunaStorage
from trainers import available_trainers

log = logging.getLogger("regtune.api")


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the API for `settings` (default: the environment's `REGTUNE_*` settings).

    At start-up the lifespan applies migrations when `settings.should_auto_migrate` (default on
    SQLite), then puts the engine, the session factory and a lazily opened Optuna storage on
    `app.state`.
    """
    settings = settings or get_settings()
    configure_logging(settings.log_format)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.should_auto_migrate:
            from service.migrations import upgrade

            await run_in_threadpool(upgrade, settings.database_url)
        # Load the trainer plugins now: spec validation looks them up inside the event loop, and
        # the first lookup imports torch and Lightning.
        await run_in_threadpool(available_trainers)
        engine = make_engine(settings.database_url)
        app.state.engine = engine
        app.state.session_factory = make_session_factory(engine)
        app.state.optuna_storage = LazyOptunaStorage(settings.database_url)
        app.state.schema_check = SchemaCheck(engine, settings.database_url)
        problem = await run_in_threadpool(app.state.schema_check.problem)
        if problem is not None:
            log.error("database %s; until then the API answers 503", problem)
        await run_in_threadpool(
            warn_if_no_tokens, app.state.session_factory, app.state.auth_enabled, settings.host
        )
        sweeper = StaleTrialSweeper(settings, app.state.session_factory)
        sweeper.start()
        app.state.sweeper = sweeper
        try:
            yield
        finally:
            sweeper.stop()
            app.state.optuna_storage.dispose()
            engine.dispose()

    app = FastAPI(
        title="regtune",
        version=__version__,
        description="Tune the regularization of deep-learning models with Optuna.",
        lifespan=lifespan,
        # secure by default: every route checks its bearer token unless declared public
        dependencies=[Depends(require_token)],
        responses=AUTH_RESPONSES,
        # served by service.api.docs with local assets (FastAPI's pages load from a CDN)
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    configure_auth(app, settings.auth_enabled())
    install_error_handlers(app, SECURITY_HEADERS)
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_body_bytes)
    install(app)  # GET /metrics + request latency (service.observability)
    # outermost: refusals are answered before anything else runs, every response gets headers
    app.add_middleware(HttpGuardMiddleware, allowed_hosts=settings.allowed_host_names())
    app.include_router(api.router)  # every JSON route, /healthz and the API docs
    app.include_router(dashboard.router)  # web pages, their static files, the editor's parser
    return app
