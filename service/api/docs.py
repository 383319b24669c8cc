"""The API's documentation pages, `/docs` (Swagger UI) and `/redoc` (ReDoc), with local assets.

FastAPI's built-in pages load their JavaScript from a CDN (a floating version, no integrity
check) onto the origin whose local storage holds the dashboard's token, and start Swagger UI
with an inline script that the Content-Security-Policy forbids. These pages take the same
assets from the installed `fastapi-offline` package (Swagger UI 5 and ReDoc, no CDN, works
offline) and start Swagger UI from a served file.
"""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

import fastapi_offline
from fastapi import APIRouter, Response
from fastapi.responses import FileResponse, HTMLResponse

from service import __version__
from service.auth.dependencies import public
from service.errors import NotFoundError

__all__ = ["router"]

_ASSETS = Path(fastapi_offline.__file__).parent / "static"
STATIC_PREFIX = "/docs-static"
ASSETS = {
    "swagger-ui-bundle.js": _ASSETS / "swagger-ui-bundle.js",
    "swagger-ui.css": _ASSETS / "swagger-ui.css",
    "redoc.standalone.js": _ASSETS / "redoc.standalone.js",
    "favicon.png": _ASSETS / "favicon.png",
}
MEDIA_TYPES = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}
# the settings FastAPI's own /docs page passes, read from the page instead of an inline script
SWAGGER_INIT = """window.addEventListener("load", () => {
  window.ui = SwaggerUIBundle({
    url: document.body.dataset.openapiUrl,
    dom_id: "#swagger-ui",
    layout: "BaseLayout",
    deepLinking: true,
    showExtensions: true,
    showCommonExtensions: true,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
  });
});
"""
_V = f"?v={__version__}-{version('fastapi-offline')}"


def _page(head: str, body: str, body_attrs: str = "") -> str:
    """An HTML page titled "regtune API" with the favicon, plus `head` and `body` lines."""
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>regtune API</title>
<link rel="icon" href="{STATIC_PREFIX}/favicon.png{_V}">
{head}</head>
<body{body_attrs}>
{body}</body>
</html>
"""


SWAGGER_PAGE = _page(
    head=f'<link rel="stylesheet" href="{STATIC_PREFIX}/swagger-ui.css{_V}">\n',
    body=f"""<div id="swagger-ui"></div>
<script src="{STATIC_PREFIX}/swagger-ui-bundle.js{_V}"></script>
<script src="{STATIC_PREFIX}/swagger-init.js{_V}"></script>
""",
    body_attrs=' data-openapi-url="/openapi.json"',
)
REDOC_PAGE = _page(
    head="",
    body=f"""<redoc spec-url="/openapi.json"></redoc>
<script src="{STATIC_PREFIX}/redoc.standalone.js{_V}"></script>
""",
)
CACHE = {"Cache-Control": "max-age=86400"}

router = APIRouter(include_in_schema=False)


@router.get("/docs", response_class=HTMLResponse)
@public
def swagger_ui() -> HTMLResponse:
    return HTMLResponse(SWAGGER_PAGE)


@router.get("/redoc", response_class=HTMLResponse)
@public
def redoc() -> HTMLResponse:
    return HTMLResponse(REDOC_PAGE)


@router.get(STATIC_PREFIX + "/{name}")
@public
def docs_asset(name: str) -> Response:
    if name == "swagger-init.js":
        return Response(SWAGGER_INIT, media_type="text/javascript", headers=CACHE)
    path = ASSETS.get(name)
    if path is None:
        raise NotFoundError(f"no documentation asset {name!r}", loc=["path", "name"])
    return FileResponse(path, media_type=MEDIA_TYPES[path.suffix], headers=CACHE)
