"""/api/v1/presets: the named search-space presets a spec can ask for. Handlers stay thin."""

from __future__ import annotations

from fastapi import APIRouter

from service.presets import PresetInfo, list_presets

router = APIRouter(prefix="/api/v1/presets", tags=["presets"])


@router.get("", response_model=list[PresetInfo])
def get_presets() -> list[PresetInfo]:
    """Named search-space presets: name, description and the parameters each fills.

    A spec uses one as ``search_space: {preset: <name>, ...}``; parameters it gives win.
    """
    return list_presets()
