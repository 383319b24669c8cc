"""One status-coded error type for domain failures, and its handler.

Domain errors (not found, conflict, payload too large, ...) are `RegtuneError`s raised by the
service layer; one handler turns them into ``{"detail": [{"loc": [...], "msg": ..., "type": ...}]}``
with their status code. 422 is reserved for payload validation (FastAPI's own handler, reshaped
to the same body).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

__all__ = [
    "ConflictError",
    "ErrorDetail",
    "ErrorResponse",
    "NotFoundError",
    "PayloadTooLargeError",
    "RegtuneError",
    "ServiceUnavailableError",
    "install_error_handlers",
]


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

    def __init__(self, message: str, *, loc: Sequence[str | int] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.loc = list(loc)

    def to_response(self) -> ErrorResponse:
        return ErrorResponse(detail=[ErrorDetail(loc=self.loc, msg=self.message, type=self.type)])


class NotFoundError(RegtuneError):
    status_code = 404
    type = "not_found"


class ConflictError(RegtuneError):
    status_code = 409
    type = "conflict"


class PayloadTooLargeError(RegtuneError):
    status_code = 413
    type = "payload_too_large"


class ServiceUnavailableError(RegtuneError):
    status_code = 503
    type = "unavailable"


def error_response(status_code: int, body: ErrorResponse) -> JSONResponse:
    return JSONResponse(status_code=status_code, content=body.model_dump(mode="json"))


async def _regtune_error_handler(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RegtuneError)
    return error_response(exc.status_code, exc.to_response())


def _clean_msg(msg: str) -> str:
    # pydantic prefixes messages raised in validators with "Value error, "; users need the rule
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            return msg[len(prefix) :]
    return msg


def validation_details(errors: Sequence[Any]) -> list[ErrorDetail]:
    """Pydantic errors as `ErrorDetail`s (loc without discriminator tags, message cleaned)."""
    details = []
    for err in errors:
        loc = [p for p in err.get("loc", ()) if p not in ("range", "choices", "fixed")]
        details.append(
            ErrorDetail(loc=loc, msg=_clean_msg(str(err.get("msg", ""))), type=str(err.get("type")))
        )
    return details


async def _validation_error_handler(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    body = ErrorResponse(detail=validation_details(jsonable_encoder(exc.errors())))
    return error_response(422, body)


def install_error_handlers(app: FastAPI) -> None:
    """Register the two handlers: domain errors and payload validation."""
    app.add_exception_handler(RegtuneError, _regtune_error_handler)
    app.add_exception_handler(RequestValidationError, _validation_error_handler)
