"""Prometheus metrics: study/trial/worker gauges read from SQL at scrape time, plus API latency.

The SQL-backed numbers come from a custom collector, so every API replica reports the same
database-wide truth and nothing is lost when a process restarts. Request latency is the only
in-process metric; every label comes from a closed set: the route *template*
(``/api/v1/studies/{study_id}``, one fixed label for unmatched paths, never the raw path), the
method (standard methods, anything else `OTHER`) and the status code, so its cardinality stays
bounded whatever clients send.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

from fastapi import FastAPI
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.orm import Session, sessionmaker
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.models import StudyStatus, TrialState, utcnow
from service.observability.repository import MetricsSnapshot, load_snapshot

__all__ = [
    "TRIAL_DURATION_BUCKETS",
    "RequestLatencyMiddleware",
    "SqlCollector",
    "install",
    "worker_restarts_counter",
]

log = logging.getLogger(__name__)

# Trials run from seconds (tiny CPU budgets) to hours (real GPU training).
TRIAL_DURATION_BUCKETS: tuple[float, ...] = (
    1,
    5,
    15,
    30,
    60,
    120,
    300,
    600,
    1800,
    3600,
    7200,
    14400,
    43200,
    86400,
)
UNMATCHED_ROUTE = "<unmatched>"
# The `method` label's closed set: a client may send any method token (h11 accepts tens of KB),
# so anything else is counted as OTHER rather than growing one series per token.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
OTHER_METHOD = "OTHER"


class SqlCollector(Collector):
    """Reads the service's tables at scrape time (see `repository.load_snapshot`)."""

    def __init__(self, session_factory: Callable[[], sessionmaker[Session] | None]) -> None:
        # resolved lazily: the app's lifespan creates the session factory after `install()`
        self._session_factory = session_factory

    def describe(self) -> Iterator[Metric]:
        # An empty description keeps registration from calling collect() (no SQL at import).
        return iter(())

    def collect(self) -> Iterator[Metric]:
        factory = self._session_factory()
        up = GaugeMetricFamily(
            "regtune_database_up", "1 when the last scrape could read the database, else 0"
        )
        if factory is None:
            up.add_metric([], 0)
            yield up
            return
        try:
            with factory() as session:
                snapshot = load_snapshot(session, TRIAL_DURATION_BUCKETS)
        except Exception:  # a scrape must answer even when the database is down
            log.warning("metrics: could not read the database", exc_info=True)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from _snapshot_metrics(snapshot)


def _snapshot_metrics(snap: MetricsSnapshot) -> Iterator[Metric]:
    studies = GaugeMetricFamily("regtune_studies", "Studies by status", labels=["status"])
    # every known status is always present, so dashboards and alerts see zeros, not gaps
    for status in StudyStatus:
        studies.add_metric([status.value], snap.studies_by_status.get(status.value, 0))
    yield studies

    trials = GaugeMetricFamily("regtune_trials", "Trials by state", labels=["state"])
    for state in TrialState:
        trials.add_metric([state.value], snap.trials_by_state.get(state.value, 0))
    yield trials

    hist = HistogramMetricFamily(
        "regtune_trial_duration_seconds", "Wall-clock duration of finished trials"
    )
    buckets = [(_bound(b), float(c)) for b, c in snap.durations.buckets]
    buckets.append(("+Inf", float(snap.durations.count)))
    hist.add_metric([], buckets, snap.durations.total)
    yield hist

    yield GaugeMetricFamily(
        "regtune_epochs_run", "Training epochs run by all trials", value=snap.epochs_total
    )

    pruned = snap.trials_by_state.get(TrialState.pruned.value, 0)
    finished = pruned + snap.trials_by_state.get(TrialState.complete.value, 0)
    yield GaugeMetricFamily(
        "regtune_trials_pruned_ratio",
        "Pruned trials / (complete + pruned) trials; 0 before any trial finished",
        value=pruned / finished if finished else 0.0,
    )

    yield GaugeMetricFamily(
        "regtune_workers_busy",
        "Distinct workers holding a claimed or running trial",
        value=snap.active_workers,
    )

    if snap.last_heartbeat is not None:
        age = max(0.0, (utcnow() - snap.last_heartbeat).total_seconds())
        yield GaugeMetricFamily(
            "regtune_worker_heartbeat_age_seconds",
            "Seconds since the newest trial heartbeat written by any worker (absent before any)",
            value=age,
        )


def _bound(b: float) -> str:
    return str(int(b)) if float(b).is_integer() else str(b)


def method_label(scope: Scope) -> str:
    """The request method when it is a standard one, else `OTHER` (labels from a closed set)."""
    method = scope.get("method")
    return method if method in KNOWN_METHODS else OTHER_METHOD


def route_template(scope: Scope) -> str:
    """The matched route's path template, or a fixed label when nothing matched."""
    route = scope.get("route")
    if route is None:
        return UNMATCHED_ROUTE
    path = getattr(route, "path_format", None) or getattr(route, "path", None)
    if not isinstance(path, str):
        return UNMATCHED_ROUTE
    return f"{path}/*" if isinstance(route, Mount) else path


class RequestLatencyMiddleware:
    """ASGI middleware timing each HTTP request, labelled by method, route template and status."""

    def __init__(self, app: ASGIApp, histogram: Histogram) -> None:
        self.app = app
        self.histogram = histogram

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # what the client sees if the app raises before responding
        start = time.perf_counter()

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            # the router wrote the matched route into this same scope dict
            self.histogram.labels(method_label(scope), route_template(scope), str(status)).observe(
                time.perf_counter() - start
            )


def _state_session_factory(app: FastAPI) -> Callable[[], sessionmaker[Session] | None]:
    def get() -> sessionmaker[Session] | None:
        factory: Any = getattr(app.state, "session_factory", None)
        return factory if isinstance(factory, sessionmaker) else None

    return get


def install(app: FastAPI) -> None:
    """Add `GET /metrics` and the request-latency middleware to `app`.

    The metrics live in a registry owned by this app (not the process-global one), so several
    apps in one process (tests) never collide. The database is read through
    ``app.state.session_factory``, which the app's lifespan sets.
    """
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SqlCollector(_state_session_factory(app)))
    latency = Histogram(
        "regtune_http_request_duration_seconds",
        "API request latency by route template",
        ["method", "route", "status"],
        registry=registry,
    )
    app.state.metrics_registry = registry
    app.add_middleware(RequestLatencyMiddleware, histogram=latency)

    @app.get("/metrics", include_in_schema=False)
    def metrics(_request: Request) -> Response:
        # a sync route: the SQL collector blocks, so it runs in the threadpool
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


def worker_restarts_counter(app: FastAPI) -> Counter:
    """`regtune_worker_restarts_total` on `app`'s /metrics: local worker processes restarted
    after a crash (`regtune serve --workers N` supervises them in the API's own process)."""
    return Counter(
        "regtune_worker_restarts",
        "Local worker processes restarted after dying abnormally",
        registry=app.state.metrics_registry,
    )
