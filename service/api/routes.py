"""Every route of the API, gathered in one router."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from service.api import docs, plots, presets, studies, system
from service.errors import ErrorResponse

# 422 bodies use the same shape as every other error (see service.errors)
VALIDATION: dict[int | str, dict[str, Any]] = {
    422: {"model": ErrorResponse, "description": "Invalid request: each problem names its field"},
    413: {"model": ErrorResponse, "description": "Request body too large"},
}

router = APIRouter()
router.include_router(system.router)
router.include_router(studies.router, responses=VALIDATION)
router.include_router(plots.router)
router.include_router(presets.router)
router.include_router(docs.router)
