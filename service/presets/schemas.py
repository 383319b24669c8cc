"""Response model of GET /api/v1/presets."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class PresetInfo(BaseModel):
    """A named search-space preset: write ``search_space: {preset: <name>}`` in a spec."""

    name: str = Field(examples=["standard"])
    description: str
    search_space: dict[str, dict[str, Any]] = Field(
        description="the parameters the preset fills, in the spec's search-space shape",
        examples=[{"weight_decay": {"low": 1e-6, "high": 0.1, "log": True}}],
    )
