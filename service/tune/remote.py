"""Server mode: submit the spec to a regtune server, then follow the study over HTTP.

Errors are classified for the exit-code contract: unreachable server, a 5xx, 401 or 403 -> 4;
a refused spec (422) or a taken name (409) -> 2.
"""

from __future__ import annotations

import time
from typing import Any

import httpx

from service.client import _detail
from service.tune.errors import ExitCode, TuneError

__all__ = ["RemoteStudy"]

PAGE = 500
FINISHED_STATES = ("complete", "pruned", "fail")
# a CI job outlives a server restart or a proxy hiccup while it polls; not while it submits
POLL_RETRY_S = 60.0


class RemoteStudy:
    """A study on a regtune server (a `StudySource`)."""

    def __init__(self, server: str, token: str | None, timeout: float = 30.0) -> None:
        self.server = server.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.server, headers=headers, timeout=timeout)
        self.study_id: int | None = None

    def close(self) -> None:
        self._http.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise TuneError(
                ExitCode.SERVER,
                f"cannot reach the regtune server at {self.server} ({exc.__class__.__name__})",
            ) from None
        if response.status_code in (401, 403):
            raise TuneError(
                ExitCode.SERVER,
                f"the server refused the token (HTTP {response.status_code}: "
                f"{_detail(response)}); pass a valid one with --token or REGTUNE_TOKEN",
            )
        if response.status_code >= 500:
            raise TuneError(
                ExitCode.SERVER,
                f"server error on {method} {path} (HTTP {response.status_code}: "
                f"{_detail(response)})",
            )
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        """A request during polling: transient server trouble is retried for a while."""
        deadline = time.monotonic() + POLL_RETRY_S
        while True:
            try:
                response = self._request(method, path, **kwargs)
                break
            except TuneError as exc:
                auth = "refused the token" in exc.message
                if auth or time.monotonic() >= deadline:
                    raise
                time.sleep(2.0)
        if response.status_code >= 400:
            raise TuneError(
                ExitCode.SERVER,
                f"unexpected answer to {method} {path}: HTTP {response.status_code}: "
                f"{_detail(response)}",
            )
        return response.json()

    def submit(self, body: dict[str, Any]) -> dict[str, Any]:
        """POST the spec; a refused spec or a taken name is a usage error (exit 2)."""
        response = self._request("POST", "/api/v1/studies", json=body)
        if response.status_code in (409, 413, 422):
            hint = " (pick another name with --name)" if response.status_code == 409 else ""
            raise TuneError(
                ExitCode.USAGE,
                f"the server refused the spec (HTTP {response.status_code}): "
                f"{_detail(response)}{hint}",
            )
        if response.status_code >= 400:
            raise TuneError(
                ExitCode.SERVER,
                f"unexpected answer to the submission: HTTP {response.status_code}: "
                f"{_detail(response)}",
            )
        study: dict[str, Any] = response.json()
        self.study_id = int(study["id"])
        return study

    # --- StudySource ----------------------------------------------------------------------

    def study(self) -> dict[str, Any]:
        return dict(self._json("GET", f"/api/v1/studies/{self.study_id}"))

    def finished_trials(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        while True:
            params: list[tuple[str, str | int]] = [("state", s) for s in FINISHED_STATES]
            params += [("sort", "number"), ("limit", PAGE), ("offset", len(items))]
            page = self._json("GET", f"/api/v1/studies/{self.study_id}/trials", params=params)
            items += page["items"]
            if not page["items"] or len(items) >= page["total"]:
                return items

    def best(self) -> dict[str, Any] | None:
        response = self._request("GET", f"/api/v1/studies/{self.study_id}/best")
        if response.status_code == 409:  # no completed trial
            return None
        if response.status_code >= 400:
            raise TuneError(
                ExitCode.SERVER, f"cannot read the best trial: HTTP {response.status_code}"
            )
        best: dict[str, Any] = response.json()
        return best

    def cancel(self) -> None:
        """Cancel the study (409: it already ended, fine)."""
        if self.study_id is not None:
            self._request("POST", f"/api/v1/studies/{self.study_id}/cancel")

    def problem(self) -> str | None:
        return None
