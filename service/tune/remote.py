"""Server mode: submit the spec to a regtune server, then follow the study over HTTP.

The requests go through the one API client (`service.client`); its typed `ClientError` is mapped
here onto the exit-code contract: unreachable server, a 5xx, 401 or 403 -> 4; a refused spec
(413, 422) or a taken name (409) -> 2.
"""

from __future__ import annotations

from typing import Any

from service.client import ApiClient, ClientError
from service.tune.errors import ExitCode, TuneError

__all__ = ["RemoteStudy"]

PAGE = 500
FINISHED_STATES = ("complete", "pruned", "fail")
# a CI job outlives a server restart or a proxy hiccup while it polls; not while it submits
POLL_RETRY_S = 60.0


def _server_error(exc: ClientError, what: str) -> TuneError:
    """Exit 4 for an unreachable server, a refused token or a 5xx; `what` names the request."""
    if exc.unreachable:
        message = f"cannot reach the regtune server at {exc.url} ({exc.detail})"
    elif exc.auth:
        message = (
            f"the server refused the token (HTTP {exc.status_code}: {exc.detail}); "
            "pass a valid one with --token or REGTUNE_TOKEN"
        )
    elif exc.transient:
        message = f"server error on {what} (HTTP {exc.status_code}: {exc.detail})"
    else:
        message = f"unexpected answer to {what}: HTTP {exc.status_code}: {exc.detail}"
    return TuneError(ExitCode.SERVER, message)


class RemoteStudy:
    """A study on a regtune server (a `StudySource`)."""

    def __init__(self, server: str, token: str | None, timeout: float = 30.0) -> None:
        try:
            self._client = ApiClient(server, token, timeout=timeout)
        except ClientError as exc:
            raise TuneError(ExitCode.USAGE, str(exc)) from None
        self.server = self._client.server
        self.study_id: int | None = None

    def close(self) -> None:
        self._client.close()

    def submit(self, body: dict[str, Any]) -> dict[str, Any]:
        """POST the spec; a refused spec or a taken name is a usage error (exit 2)."""
        try:
            study = self._client.submit(body)
        except ClientError as exc:
            if exc.status_code in (409, 413, 422):
                hint = " (pick another name with --name)" if exc.status_code == 409 else ""
                raise TuneError(
                    ExitCode.USAGE,
                    f"the server refused the spec (HTTP {exc.status_code}): {exc.detail}{hint}",
                ) from None
            raise _server_error(exc, "the submission") from None
        self.study_id = int(study["id"])
        return study

    # --- StudySource ----------------------------------------------------------------------

    def study(self) -> dict[str, Any]:
        assert self.study_id is not None
        try:
            return self._client.study(self.study_id, retry_for=POLL_RETRY_S)
        except ClientError as exc:
            raise _server_error(exc, f"GET /api/v1/studies/{self.study_id}") from None

    def finished_trials(self) -> list[dict[str, Any]]:
        assert self.study_id is not None
        items: list[dict[str, Any]] = []
        while True:
            params: list[tuple[str, str | int]] = [("state", s) for s in FINISHED_STATES]
            params += [("sort", "number"), ("limit", PAGE), ("offset", len(items))]
            try:
                page = self._client.trials(self.study_id, params, retry_for=POLL_RETRY_S)
            except ClientError as exc:
                raise _server_error(exc, f"GET /api/v1/studies/{self.study_id}/trials") from None
            items += page["items"]
            if not page["items"] or len(items) >= page["total"]:
                return items

    def best(self) -> dict[str, Any] | None:
        assert self.study_id is not None
        try:
            return self._client.best(self.study_id)
        except ClientError as exc:
            if exc.status_code == 409:  # no completed trial
                return None
            if exc.unreachable or exc.auth or exc.transient:
                raise _server_error(exc, f"GET /api/v1/studies/{self.study_id}/best") from None
            raise TuneError(
                ExitCode.SERVER, f"cannot read the best trial: HTTP {exc.status_code}"
            ) from None

    def cancel(self) -> None:
        """Cancel the study (409: it already ended, fine)."""
        if self.study_id is None:
            return
        try:
            self._client.cancel(self.study_id)
        except ClientError as exc:
            if exc.unreachable or exc.auth or exc.transient:
                raise _server_error(exc, f"POST /api/v1/studies/{self.study_id}/cancel") from None

    def problem(self) -> str | None:
        return None
