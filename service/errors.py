"""One status-coded error type for domain failures, and its handler.

Domain errors (not found, conflict, payload too large, ...) are `RegtuneError`s raised by the
service layer; one handler turns them into ``{"detail": [{"loc": [...], "msg": ..., "type": ...}]}``
with their status code. 422 is reserved for payload validation (FastAPI's own handler, reshaped
to the same body).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy.exc import OperationalError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

__all__ = [
    "ConflictError",
    "ErrorDetail",
    "ErrorResponse",
    "ForbiddenError",
    "InternalError",
    "NotFoundError",
    "PayloadTooLargeError",
    "RegtuneError",
    "ServiceUnavailableError",
    "TooManyRequestsError",
    "UnauthorizedError",
    "first_line",
    "install_error_handlers",
    "validation_details",
]

log = logging.getLogger(__name__)


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message ('' when it has none): what a one-line error
    says of it (the full text goes to the log)."""
    return (str(exc).splitlines() or [""])[0]


class ErrorDetail(BaseModel):
    """One problem: where it is (`loc`, e.g. ``["body", "search_space", "dropout"]``) and what."""

    loc: list[str | int] = Field(default_factory=list, examples=[["body", "name"]])
    msg: str = Field(examples=["a study named 'x' already exists"])
    type: str = Field(examples=["conflict"])


class ErrorResponse(BaseModel):
    """The body of every error response (4xx/5xx)."""

    detail: list[ErrorDetail]


class RegtuneError(Exception):
    """A domain failure with an HTTP status code and a user-facing message."""

    status_code: int = 400
    type: str = "error"
    # extra response headers (e.g. WWW-Authenticate on a 401)
    headers: dict[str, str] | None = None

    def __init__(self, message: str, *, loc: Sequence[str | int] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.loc = list(loc)

    def to_response(self) -> ErrorResponse:
        return ErrorResponse(detail=[ErrorDetail(loc=self.loc, msg=self.message, type=self.type)])


class NotFoundError(RegtuneError):
    status_code = 404
    type = "not_found"


class UnauthorizedError(RegtuneError):
    """No valid bearer token (missing, unknown or revoked)."""

    status_code = 401
    type = "unauthorized"
    headers = {"WWW-Authenticate": "Bearer"}


class ForbiddenError(RegtuneError):
    """A valid token whose scope does not allow the request (a read token on a write)."""

    status_code = 403
    type = "forbidden"


class ConflictError(RegtuneError):
    status_code = 409
    type = "conflict"


class PayloadTooLargeError(RegtuneError):
    status_code = 413
    type = "payload_too_large"


class TooManyRequestsError(RegtuneError):
    """A configured limit is reached (e.g. REGTUNE_MAX_QUEUED_STUDIES); retry later."""

    status_code = 429
    type = "too_many_requests"


class ServiceUnavailableError(RegtuneError):
    status_code = 503
    type = "unavailable"


class InternalError(RegtuneError):
    """A bug: never raised on purpose; the answer to an exception nothing else handled."""

    status_code = 500
    type = "internal_error"


def error_response(
    status_code: int, body: ErrorResponse, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        status_code=status_code, content=body.model_dump(mode="json"), headers=headers
    )


async def _regtune_error_handler(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RegtuneError)
    return error_response(exc.status_code, exc.to_response(), exc.headers)


def _clean_msg(msg: str) -> str:
    # pydantic prefixes messages raised in validators with "Value error, "; users need the rule
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            return msg[len(prefix) :]
    return msg


# Discriminator tags pydantic inserts in locations of the search-space union and of the spec's
# `objective` (one or several): not field names.
_TAGS = frozenset({"range", "choices", "fixed", "one", "several"})
# A rule message from our validators starts with the field it is about: "dropout.high must ..."
_LEADING_PATH = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*)(?=[: ])")


def _field_path(loc: Sequence[str | int]) -> str:
    return ".".join(str(p) for p in loc if p not in ("body", "query", "path"))


def _rule_details(loc: list[str | int], msg: str, type_: str) -> list[ErrorDetail]:
    """Split a model-level rule message into one detail per field it names.

    Validators on a whole model (the spec, the search space) report at the model's location;
    their messages start with the field path, which is moved into `loc` so clients can point
    at the field. Several rules broken at once arrive joined with "; ".
    """
    parts = msg.split("; ")
    if len(parts) > 1 and not all(
        (m := _LEADING_PATH.match(p)) and "." in m.group(1) for p in parts
    ):
        parts = [msg]  # a "; " inside one message (e.g. the list of registered trainers)
    details = []
    for part in parts:
        match = _LEADING_PATH.match(part)
        full_loc, text = list(loc), part
        if match:
            path: list[str | int] = list(match.group(1).split("."))
            if path[0] in loc:  # "dropout.high ..." reported at [..., "dropout"]
                full_loc = loc[: loc.index(path[0])] + path
            else:
                full_loc = loc + path
                context = _field_path(loc)
                if context:  # "low must be <= high" at [..., "dropout"]: say which parameter
                    text = f"{context}.{part}"
        details.append(ErrorDetail(loc=full_loc, msg=text, type=type_))
    return details


def _without_tags(loc: Sequence[str | int]) -> list[str | int]:
    """`loc` without the union's tags; a field named like its tag stays (``fixed.fixed``)."""
    out: list[str | int] = []
    for i, part in enumerate(loc):
        if part in _TAGS and (i == 0 or loc[i - 1] not in _TAGS):
            continue  # the tag comes right after the parameter's name
        out.append(part)
    return out


def validation_details(errors: Sequence[Any]) -> list[ErrorDetail]:
    """Pydantic errors as `ErrorDetail`s whose `loc` and `msg` both name the field and rule."""
    details: list[ErrorDetail] = []
    for err in errors:
        loc = _without_tags(err.get("loc", ()))
        msg = _clean_msg(str(err.get("msg", "")))
        type_ = str(err.get("type", "value_error"))
        if type_ == "value_error":
            details.extend(_rule_details(loc, msg, type_))
            continue
        field = _field_path(loc)
        details.append(ErrorDetail(loc=loc, msg=f"{field}: {msg}" if field else msg, type=type_))
    return details


async def _validation_error_handler(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    body = ErrorResponse(detail=validation_details(jsonable_encoder(exc.errors())))
    return error_response(422, body)


async def _http_exception_handler(_request: Request, exc: Exception) -> JSONResponse:
    # framework-level errors (unknown path, wrong method, body too large while streaming) get the
    # same body shape as the domain errors
    assert isinstance(exc, StarletteHTTPException)
    loc: list[str | int] = ["body"] if exc.status_code == 413 else []
    body = ErrorResponse(
        detail=[ErrorDetail(loc=loc, msg=str(exc.detail), type=f"http_{exc.status_code}")]
    )
    return JSONResponse(body.model_dump(mode="json"), exc.status_code, headers=exc.headers)


def _schema_error(request: Request) -> ServiceUnavailableError | None:
    """A 503 naming `regtune db upgrade` when the app's schema check finds the schema wrong."""
    check = getattr(request.app.state, "schema_check", None)
    problem = check.problem() if check is not None else None
    return ServiceUnavailableError(f"the database {problem}") if problem else None


async def _database_error_handler(request: Request, exc: Exception) -> JSONResponse:
    # a database that stops answering mid-request is an outage, not a bug: 503, no traceback
    log.warning("database error: %s", exc.__class__.__name__, exc_info=exc)
    err = await run_in_threadpool(_schema_error, request) or ServiceUnavailableError(
        f"the database is unavailable ({exc.__class__.__name__}); retry later"
    )
    return error_response(err.status_code, err.to_response())


def _unhandled_error_handler(
    headers: Mapping[str, str],
) -> Callable[[Request, Exception], Awaitable[JSONResponse]]:
    async def handle(request: Request, exc: Exception) -> JSONResponse:
        # a bug (or a schema nobody migrated): the traceback goes to the server's log, the
        # client gets the one error shape; this response bypasses the app's middleware, hence
        # the headers passed in
        log.error(
            "unhandled %s on %s %s",
            exc.__class__.__name__,
            request.method,
            request.url.path,
            exc_info=exc,
        )
        err = await run_in_threadpool(_schema_error, request) or InternalError(
            "internal server error (logged on the server)"
        )
        return error_response(err.status_code, err.to_response(), dict(headers))

    return handle


def install_error_handlers(app: FastAPI, headers: Mapping[str, str] | None = None) -> None:
    """Register the handlers: domain errors, payload validation, framework errors, database
    outages, and anything else (a logged 500 in the same shape, carrying `headers`)."""
    app.add_exception_handler(RegtuneError, _regtune_error_handler)
    app.add_exception_handler(RequestValidationError, _validation_error_handler)
    app.add_exception_handler(StarletteHTTPException, _http_exception_handler)
    app.add_exception_handler(OperationalError, _database_error_handler)
    app.add_exception_handler(Exception, _unhandled_error_handler(headers or {}))
