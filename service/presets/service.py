"""Listing of the search-space presets (`trainers.presets`), for the API and the CLI."""

from __future__ import annotations

from service.presets.schemas import PresetInfo
from trainers.presets import PRESETS

__all__ = ["list_presets"]


def list_presets() -> list[PresetInfo]:
    """Every preset with its description and search-space document (`standard` first)."""
    return [
        PresetInfo(name=p.name, description=p.description, search_space=p.document())
        for p in PRESETS.values()
    ]
