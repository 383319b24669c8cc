"""The one HTTP client for the regtune REST API: the CLI's client commands and `regtune tune
--server` both call the server through `ApiClient`, and every failure is a `ClientError` that says
what happened as data (HTTP status, server detail) so callers decide on types, not on messages.
"""

from __future__ import annotations

import time
import urllib.parse
from typing import Any

import httpx

__all__ = ["ApiClient", "ClientError"]


class ClientError(Exception):
    """A request that did not succeed.

    `status_code` is the HTTP status of the answer (a 2xx when its body was not JSON), or None
    when no answer came (server unreachable: `detail` is then the transport error's name);
    `detail` is the server's error message(s) on one line; `str(error)` is a one-line message fit
    for a terminal.
    """

    def __init__(
        self, message: str, *, status_code: int | None = None, detail: str = "", url: str = ""
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.detail = detail
        self.url = url

    @property
    def unreachable(self) -> bool:
        """No HTTP answer at all (connection refused, DNS, timeout)."""
        return self.status_code is None

    @property
    def auth(self) -> bool:
        """The server refused the token (401) or its scope (403)."""
        return self.status_code in (401, 403)

    @property
    def transient(self) -> bool:
        """Worth retrying: the server was unreachable or erred (5xx)."""
        return self.status_code is None or self.status_code >= 500


# where in the request a 422's `loc` starts; the field path follows
_LOC_ROOTS = frozenset({"body", "path", "query", "header"})


def _detail(response: httpx.Response) -> str:
    """The server's error message(s): ``{"detail": [{"loc", "msg"}]}`` or a plain detail."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:200] or response.reason_phrase
    detail = body.get("detail") if isinstance(body, dict) else body
    if isinstance(detail, list):
        parts = []
        for item in detail:
            if isinstance(item, dict):
                where = ".".join(str(p) for p in item.get("loc", []) if p not in _LOC_ROOTS)
                msg = str(item.get("msg", ""))
                # the server's messages mostly start with the field already
                named = not where or msg.startswith(where)
                parts.append(msg if named else f"{where}: {msg}")
            else:
                parts.append(str(item))
        return "; ".join(parts)
    return str(detail)


def _ref(study: int | str) -> str:
    """A study id or name as one path segment."""
    return urllib.parse.quote(str(study), safe="")


def _invalid_url(server: str, exc: Exception) -> ClientError:
    return ClientError(
        f"the server URL {server!r} (--server or REGTUNE_SERVER_URL) is not valid: {exc}",
        detail="invalid URL",
        url=server,
    )


class ApiClient:
    """Calls ``{server}/api/v1/...``; every failure becomes a `ClientError`."""

    def __init__(self, server: str, token: str | None = None, timeout: float = 30.0) -> None:
        """Raises `ClientError` for a server URL or a token no request could carry."""
        self.server = server.rstrip("/")
        token = token.strip() if token else token  # a secret pasted with its newline
        if token and not (token.isascii() and token.isprintable()):
            raise ClientError(
                "the token (--token or REGTUNE_TOKEN) holds characters no regtune token has; "
                "copy it again",
                detail="invalid token",
                url=self.server,
            )
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        if not self.server.startswith(("http://", "https://")):
            raise _invalid_url(self.server, ValueError("it needs http:// or https://"))
        try:
            self._http = httpx.Client(base_url=self.server, headers=headers, timeout=timeout)
        except httpx.InvalidURL as exc:
            raise _invalid_url(self.server, exc) from None

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, *, retry_for: float = 0.0, **kwargs: Any) -> Any:
        """The JSON answer to ``METHOD path``.

        With `retry_for` > 0, transient failures (unreachable, 5xx) are retried every 2 s for
        that many seconds before the last one is raised; a refused token never is.
        """
        deadline = time.monotonic() + retry_for
        while True:
            try:
                return self._once(method, path, **kwargs)
            except ClientError as exc:
                if not exc.transient or time.monotonic() >= deadline:
                    raise
            time.sleep(2.0)

    def _once(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.InvalidURL as exc:
            raise _invalid_url(self.server, exc) from None
        except httpx.TransportError as exc:
            raise ClientError(
                f"cannot reach the regtune server at {self.server} ({exc.__class__.__name__}); "
                "is `regtune serve` running? (set --server or REGTUNE_SERVER_URL)",
                detail=exc.__class__.__name__,
                url=self.server,
            ) from None
        if response.status_code >= 400:
            detail = _detail(response)
            raise ClientError(
                f"HTTP {response.status_code}: {detail}",
                status_code=response.status_code,
                detail=detail,
                url=self.server,
            )
        try:
            return response.json()
        except ValueError:
            raise ClientError(
                f"the server sent a non-JSON answer to {method} {path}",
                status_code=response.status_code,
                detail="non-JSON answer",
                url=self.server,
            ) from None

    def submit(self, spec: dict[str, Any]) -> dict[str, Any]:
        return dict(self.request("POST", "/api/v1/studies", json=spec))

    def study(self, study_id: int | str, *, retry_for: float = 0.0) -> dict[str, Any]:
        return dict(self.request("GET", f"/api/v1/studies/{_ref(study_id)}", retry_for=retry_for))

    def trials(
        self,
        study_id: int,
        params: list[tuple[str, str | int]],
        *,
        retry_for: float = 0.0,
    ) -> dict[str, Any]:
        """One page of ``GET /studies/{id}/trials`` (`params`: state, sort, limit, offset...)."""
        path = f"/api/v1/studies/{study_id}/trials"
        return dict(self.request("GET", path, params=params, retry_for=retry_for))

    def best(self, study_id: int | str) -> dict[str, Any]:
        return dict(self.request("GET", f"/api/v1/studies/{_ref(study_id)}/best"))

    def cancel(self, study_id: int | str) -> dict[str, Any]:
        return dict(self.request("POST", f"/api/v1/studies/{_ref(study_id)}/cancel"))
