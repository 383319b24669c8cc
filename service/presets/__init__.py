"""Named search-space presets as the service shows them (API and CLI); defined in trainers."""

from service.presets.schemas import PresetInfo
from service.presets.service import list_presets

__all__ = ["PresetInfo", "list_presets"]
