"""Request body size limit (Settings.max_body_bytes): 413 before the body is parsed."""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import PayloadTooLargeError, error_response

__all__ = ["BodySizeLimitMiddleware"]


class BodySizeLimitMiddleware:
    """Refuse bodies over `max_bytes`, by Content-Length or while a chunked body streams in."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _error(self) -> PayloadTooLargeError:
        return PayloadTooLargeError(
            f"request body exceeds the limit of {self.max_bytes} bytes (REGTUNE_MAX_BODY_BYTES)",
            loc=["body"],
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for key, value in scope.get("headers", ()):
            if key == b"content-length":
                try:
                    too_large = int(value) > self.max_bytes
                except ValueError:
                    too_large = False
                if too_large:
                    err = self._error()
                    await error_response(err.status_code, err.to_response())(scope, receive, send)
                    return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # raised inside the route's body read, which re-raises HTTPExceptions only
                    # (anything else becomes a 400); the HTTPException handler answers 413
                    raise HTTPException(413, self._error().message)
            return message

        await self.app(scope, limited_receive, send)
