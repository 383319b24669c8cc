"""`regtune presets`: the named search-space presets built into this installation.

They are code, not data, so no server or database is needed: a server of the same version
answers GET /api/v1/presets with the same list.
"""

from __future__ import annotations

import json
from typing import Any

import typer
import yaml

from service.presets.service import list_presets

__all__ = ["print_presets"]

_USAGE = "use one in a spec: search_space: {preset: standard, dropout: {low: 0.1, high: 0.3}}"


def _flow(value: dict[str, Any]) -> str:
    """One parameter as a spec's YAML holds it, e.g. ``{low: 1.0e-06, high: 0.1, log: true}``."""
    return str(yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=1000)).strip()


def print_presets(as_json: bool = False) -> None:
    """Print every preset: name, description and parameters (YAML), or the API's JSON list."""
    presets = list_presets()
    if as_json:
        typer.echo(json.dumps([p.model_dump(mode="json") for p in presets], indent=2))
        return
    for preset in presets:
        typer.echo(f"{preset.name}: {preset.description}")
        for name, spec in preset.search_space.items():
            typer.echo(f"  {name + ':':<16} {_flow(spec)}")
        typer.echo("")
    typer.echo(_USAGE)
