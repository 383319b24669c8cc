"""The FastAPI side of auth: one app-wide dependency that checks every route's bearer token.

Installed on the whole app (`create_app`), so a new route is protected unless it is declared
public: secure by default. GET/HEAD/OPTIONS need a `read` (or `write`) token; every other
method needs a `write` token. Public routes: `/healthz`, `/metrics` and endpoints decorated
with `public` (e.g. dashboard HTML pages, whose data calls stay protected).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import Depends, FastAPI, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from service.auth import repository
from service.auth.service import TokenInfo, TokenScope, authenticate
from service.config import LOOPBACK_HOSTS
from service.db import unit_of_work
from service.errors import ErrorResponse

__all__ = [
    "AUTH_RESPONSES",
    "PUBLIC_PATHS",
    "READ_METHODS",
    "configure_auth",
    "public",
    "require_token",
    "warn_if_no_tokens",
]

log = logging.getLogger("regtune.auth")

PUBLIC_PATHS = frozenset({"/healthz", "/metrics"})
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_PUBLIC_ATTR = "__regtune_public__"

# Documented on every operation (the dependency is app-wide); 400/422 keep the one error shape.
AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {
        "model": ErrorResponse,
        "description": "Malformed request body",
    },
    401: {"model": ErrorResponse, "description": "Missing, unknown or revoked token (auth on)"},
    403: {"model": ErrorResponse, "description": "A read token on a write endpoint (auth on)"},
    422: {"model": ErrorResponse, "description": "Invalid request: each problem names its field"},
}

F = TypeVar("F", bound=Callable[..., Any])

bearer = HTTPBearer(
    auto_error=False,
    description="A regtune API token (`regtune token create`); read scope for GET, write for "
    "the rest. Required only when the server runs with auth on.",
)


def public(endpoint: F) -> F:
    """Mark a route's endpoint as needing no token (pages only; never data or writes).

    Declare such routes with ``include_in_schema=False``: the OpenAPI schema lists the bearer
    requirement on every operation except `PUBLIC_PATHS`.
    """
    setattr(endpoint, _PUBLIC_ATTR, True)
    return endpoint


def _is_public(request: Request) -> bool:
    route = request.scope.get("route")
    if route is None:
        return False
    if getattr(route, "path", None) in PUBLIC_PATHS:
        return True
    return bool(getattr(getattr(route, "endpoint", None), _PUBLIC_ATTR, False))


def require_token(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> TokenInfo | None:
    """The request's token, checked against the scope its method needs (None when auth is off).

    Runs in its own short transaction, committed before the handler: the throttled
    `last_used_at` write must not hold SQLite's write lock through the request.
    """
    if not getattr(request.app.state, "auth_enabled", False) or _is_public(request):
        return None
    needed = TokenScope.read if request.method in READ_METHODS else TokenScope.write
    secret = credentials.credentials if credentials else None
    with unit_of_work(request.app.state.session_factory) as session:
        return authenticate(session, secret, needed)


def configure_auth(app: FastAPI, enabled: bool) -> None:
    """Switch token checks on or off for `app` and keep its OpenAPI schema truthful.

    The dependency itself is always installed; public operations are documented without the
    bearer requirement and without 401/403 responses.
    """
    app.state.auth_enabled = enabled
    build_schema = app.openapi

    def openapi() -> dict[str, Any]:
        schema = build_schema()  # cached by FastAPI; the edits below are idempotent
        # `public` endpoints are pages, left out of the schema; only these paths appear in it
        for path in PUBLIC_PATHS:
            for operation in schema.get("paths", {}).get(path, {}).values():
                operation.pop("security", None)
                for code in ("401", "403"):
                    operation.get("responses", {}).pop(code, None)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def warn_if_no_tokens(factory: sessionmaker[Session], enabled: bool, bind: str) -> None:
    """Log the auth mode at start-up, and loudly when auth is on but no token can pass."""
    if not enabled:
        if bind in LOOPBACK_HOSTS:
            log.info("auth is off (server bound to %s): every request is allowed", bind)
        else:
            log.warning(
                "auth is OFF on a non-loopback address (%s, REGTUNE_AUTH=off): anyone who can "
                "reach this port can submit and cancel studies",
                bind,
            )
        return
    try:
        with unit_of_work(factory) as session:
            active = [t for t in repository.list_tokens(session) if t.revoked_at is None]
    except SQLAlchemyError as exc:  # the API starts while the database is down (503s)
        log.warning("auth is on; cannot count tokens yet (%s)", exc.__class__.__name__)
        return
    if not active:
        log.warning(
            "auth is on (server bound to %s) but no active token exists: every request except "
            "/healthz and /metrics gets 401; create one with `regtune token create --name NAME "
            "--scope write`",
            bind,
        )
    else:
        log.info("auth is on (server bound to %s): %d active token(s)", bind, len(active))
