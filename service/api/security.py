"""Browser-facing guards: allowed Host names, same-origin JSON writes, security headers.

With auth off (the loopback default) the API trusts whoever reaches it, so a web page the user
visits must not be able to act through their browser:

- DNS rebinding: a hostile name resolved to 127.0.0.1 makes the browser send ``Host: evil.test``;
  only `Settings.allowed_host_names()` are answered (400 otherwise). `/healthz` and `/metrics`
  (public, read-only counts) answer any Host: probes and scrapers address a pod by its IP.
- CSRF: a write (POST/PUT/PATCH/DELETE) coming from another site is refused (403), judged by the
  browser's ``Sec-Fetch-Site`` or else by ``Origin`` against ``Host``; and a write under
  ``/api/`` or ``/dashboard-api/`` carrying a body or a content type must be JSON (415), which a
  cross-site HTML form or a "simple" `fetch` cannot send without a CORS preflight (never granted).

Every response also carries `SECURITY_HEADERS` (CSP, no framing, no MIME sniffing).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.auth.dependencies import PUBLIC_PATHS
from service.errors import ForbiddenError, RegtuneError, error_response

__all__ = [
    "CONTENT_SECURITY_POLICY",
    "SECURITY_HEADERS",
    "HttpGuardMiddleware",
    "InvalidHostError",
    "UnsupportedMediaTypeError",
]

# Everything is served from this origin (Plotly, Swagger UI and ReDoc included): no CDN.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        # Plotly and ReDoc insert <style> elements and style attributes at run time
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "font-src 'self' data:",
        # ReDoc runs its search index in a worker made from a blob
        "worker-src 'self' blob:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
SECURITY_HEADERS: dict[str, str] = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
}
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# where the JSON content-type rule applies (pages and /metrics take no writes)
JSON_WRITE_PREFIXES = ("/api/", "/dashboard-api/")
# what a browser says about a request made by the page of this same origin, or by the user
SAME_SITE_FETCH = frozenset({"same-origin", "none"})


class InvalidHostError(RegtuneError):
    status_code = 400
    type = "invalid_host"


class UnsupportedMediaTypeError(RegtuneError):
    status_code = 415
    type = "unsupported_media_type"


def host_name(host: str) -> str:
    """The name part of a Host header (``[::1]:8000`` -> ``::1``), lower case."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    name, sep, port = host.rpartition(":")
    return name if sep and port.isdigit() else host


def is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


def _has_body(headers: Headers) -> bool:
    if "transfer-encoding" in headers:
        return True
    length = headers.get("content-length", "0").strip()
    return not length.isdigit() or int(length) > 0


def _origin_matches(origin: str, host: str) -> bool:
    if origin == "null":  # sandboxed frames, file:// pages, some redirects
        return False
    netloc = urlsplit(origin).netloc.lower()
    return bool(netloc) and netloc == host.strip().lower()


def refusal(
    method: str, path: str, headers: Headers, allowed: frozenset[str] | None
) -> RegtuneError | None:
    """Why this request must not reach the app, or None."""
    host = headers.get("host", "")
    if allowed is not None and host_name(host) not in allowed and path not in PUBLIC_PATHS:
        return InvalidHostError(
            f"host {host[:100]!r} is not served here; add it to REGTUNE_ALLOWED_HOSTS",
            loc=["header", "host"],
        )
    if method in SAFE_METHODS:
        return None
    fetch_site = headers.get("sec-fetch-site")
    origin = headers.get("origin")
    if fetch_site is not None:
        cross_site = fetch_site.lower() not in SAME_SITE_FETCH
    else:
        cross_site = origin is not None and not _origin_matches(origin, host)
    if cross_site:
        return ForbiddenError(
            "cross-origin write refused: send it from this server's own pages or without a "
            "browser Origin",
            loc=["header", "origin"],
        )
    if path.startswith(JSON_WRITE_PREFIXES):
        content_type = headers.get("content-type")
        if (content_type is not None and not is_json(content_type)) or (
            content_type is None and _has_body(headers)
        ):
            return UnsupportedMediaTypeError(
                "a write request's body must be JSON (Content-Type: application/json)",
                loc=["header", "content-type"],
            )
    return None


class HttpGuardMiddleware:
    """Refuse disallowed hosts and cross-site or non-JSON writes; add `SECURITY_HEADERS`."""

    def __init__(self, app: ASGIApp, allowed_hosts: frozenset[str] | None) -> None:
        self.app = app
        self.allowed_hosts = allowed_hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
            await send(message)

        err = refusal(scope["method"], scope["path"], Headers(scope=scope), self.allowed_hosts)
        if err is not None:
            response = error_response(err.status_code, err.to_response(), err.headers)
            await response(scope, receive, send_with_headers)
            return
        await self.app(scope, receive, send_with_headers)
