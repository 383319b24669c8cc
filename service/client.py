"""A small HTTP client for the regtune REST API (what the CLI's client commands use)."""

from __future__ import annotations

from typing import Any

import httpx

__all__ = ["ApiClient", "ClientError"]


class ClientError(Exception):
    """A request that did not succeed, with a one-line message fit for a terminal."""


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
                loc = [str(p) for p in item.get("loc", []) if p != "body"]
                msg = str(item.get("msg", ""))
                parts.append(f"{'.'.join(loc)}: {msg}" if loc else msg)
            else:
                parts.append(str(item))
        return "; ".join(parts)
    return str(detail)


class ApiClient:
    """Calls ``{server}/api/v1/...``; every failure becomes a `ClientError`."""

    def __init__(self, server: str, token: str | None = None, timeout: float = 30.0) -> None:
        self.server = server.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.server, headers=headers, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise ClientError(
                f"cannot reach the regtune server at {self.server} ({exc.__class__.__name__}); "
                "is `regtune serve` running? (set --server or REGTUNE_SERVER_URL)"
            ) from None
        if response.status_code >= 400:
            raise ClientError(f"HTTP {response.status_code}: {_detail(response)}")
        try:
            return response.json()
        except ValueError:
            raise ClientError(f"the server sent a non-JSON answer to {method} {path}") from None

    def submit(self, spec: dict[str, Any]) -> dict[str, Any]:
        return dict(self.request("POST", "/api/v1/studies", json=spec))

    def study(self, study_id: int) -> dict[str, Any]:
        return dict(self.request("GET", f"/api/v1/studies/{study_id}"))

    def best(self, study_id: int) -> dict[str, Any]:
        return dict(self.request("GET", f"/api/v1/studies/{study_id}/best"))

    def cancel(self, study_id: int) -> dict[str, Any]:
        return dict(self.request("POST", f"/api/v1/studies/{study_id}/cancel"))
