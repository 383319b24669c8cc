"""Application factory: lifespan (engine, sessions, optional auto-migrate), routes, errors."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from service import __version__
from service.api.middleware import BodySizeLimitMiddleware
from service.config import Settings, get_settings
from service.db import make_engine, make_session_factory
from service.errors import install_error_handlers
from service.observability import configure_logging, install
from service.studies.optuna_storage import LazyOptunaStorage
from trainers import available_trainers


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
        try:
            yield
        finally:
            app.state.optuna_storage.dispose()
            engine.dispose()

    app = FastAPI(
        title="regtune",
        version=__version__,
        description="Tune the regularization of deep-learning models with Optuna.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    install_error_handlers(app)
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_body_bytes)
    install(app)  # GET /metrics + request latency (service.observability)
    from service.api.routes import router

    app.include_router(router)
    return app
