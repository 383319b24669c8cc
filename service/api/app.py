"""Application factory: lifespan (engine, sessions, optional auto-migrate), routes, errors."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from service import __version__
from service.config import Settings, get_settings
from service.db import make_engine, make_session_factory
from service.errors import install_error_handlers
from service.observability import configure_logging, install


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the API for `settings` (default: the environment's `REGTUNE_*` settings)."""
    settings = settings or get_settings()
    configure_logging(settings.log_format)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.should_auto_migrate:
            from service.migrations import upgrade

            await run_in_threadpool(upgrade, settings.database_url)
        engine = make_engine(settings.database_url)
        app.state.engine = engine
        app.state.session_factory = make_session_factory(engine)
        try:
            yield
        finally:
            engine.dispose()

    app = FastAPI(
        title="regtune",
        version=__version__,
        description="Tune the regularization of deep-learning models with Optuna.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    install_error_handlers(app)
    install(app)  # GET /metrics + request latency (service.observability)
    from service.api.routes import router

    app.include_router(router)
    return app
