"""Dashboard routes: the HTML pages, their static files, and the spec editor's YAML parsing.

Pages are server-rendered shells (layout, the spec editor's example); every study number on them
comes from the JSON API through one fetch function in `dashboard.js`, so the same code renders,
refreshes while a study runs, and sends the bearer token when API auth is on.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Annotated, Any

import plotly
from fastapi import APIRouter, Body, Request
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.templating import Jinja2Templates

from service import __version__
from service.auth.dependencies import public
from service.dashboard import examples
from service.errors import NotFoundError, RegtuneError
from service.spec import SpecTextError, parse_spec_text

__all__ = ["router"]

_HERE = Path(str(files("service.dashboard")))
templates = Jinja2Templates(directory=_HERE / "templates")

# served from the installed packages: no CDN, works offline
STATIC_FILES = {
    "plotly.min.js": Path(plotly.__file__).parent / "package_data" / "plotly.min.js",
    "dashboard.js": _HERE / "static" / "dashboard.js",
    "dashboard.css": _HERE / "static" / "dashboard.css",
}
STATIC_VERSION = f"{__version__}-{plotly.__version__}"

router = APIRouter()


def _page(request: Request, template: str, **context: Any) -> HTMLResponse:
    dashboard = getattr(request.app.state, "optuna_dashboard", None)
    base = None
    if dashboard is not None:
        # a wildcard bind is reached under the name the browser used for this page
        host = request.url.hostname if dashboard.host in ("0.0.0.0", "::") else dashboard.host
        base = f"http://{host}:{dashboard.port}/dashboard"
    return templates.TemplateResponse(
        request,
        template,
        {"static_version": STATIC_VERSION, "optuna_dashboard": base, **context},
    )


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
@public
def study_list_page(request: Request) -> HTMLResponse:
    """Every study: status, progress, best value; filter by status; pages of 25."""
    return _page(request, "list.html", page="list")


@router.get("/studies/{study}", response_class=HTMLResponse, include_in_schema=False)
@public
def study_page(request: Request, study: str) -> HTMLResponse:
    """One study: spec, best trial, plots, trials table (data fetched by the page)."""
    return _page(request, "study.html", page="study", study_ref=study)


@router.get("/new", response_class=HTMLResponse, include_in_schema=False)
@public
def new_study_page(request: Request, example: str = examples.DEFAULT) -> HTMLResponse:
    """A spec editor prefilled from an example; submits to POST /api/v1/studies."""
    return _page(
        request,
        "new.html",
        page="new",
        examples=examples.names(),
        example=example if example in examples.names() else examples.DEFAULT,
        spec_text=examples.spec_text(example),
    )


@router.get("/dashboard-static/{name}", include_in_schema=False)
@public
def static_file(name: str) -> FileResponse:
    path = STATIC_FILES.get(name)
    if path is None:
        raise NotFoundError(f"no static file {name!r}", loc=["path", "name"])
    media = "text/css" if name.endswith(".css") else "text/javascript"
    # the URL carries the version (?v=...), so browsers may keep it for a day
    return FileResponse(path, media_type=media, headers={"Cache-Control": "max-age=86400"})


class SpecSyntaxError(RegtuneError):
    status_code = 422
    type = "yaml_syntax"


@router.post("/dashboard-api/parse-spec", include_in_schema=False)
def parse_spec(
    text: Annotated[str, Body(media_type="application/json", max_length=200_000)],
) -> Any:
    """YAML (or JSON) text -> the JSON document the editor submits; 422 with the line on error."""
    try:
        return parse_spec_text(text)
    except SpecTextError as exc:
        raise SpecSyntaxError(str(exc), loc=["body"]) from None
