"""Pictures of a codec selection: what was kept, frame by frame. May import ``codec``, ``video`` and
``common``."""

from __future__ import annotations

from ..common.lazy import lazy_exports

# Public name -> the module that defines it (loaded on first use: drawing needs numpy and Pillow).
_EXPORTS = {
    "patch_count_chart": ".charts",
    "CELL_MAX": ".sheet",
    "contact_sheet": ".sheet",
    "saliency_colormap": ".drawing",
    "PANEL_NAMES": ".frame_panels",
    "animation_frames": ".frame_panels",
    "panel_layout": ".frame_panels",
    "panels": ".frame_panels",
    "ANIMATIONS": ".save",
    "drawn_here": ".save",
    "save_visualization": ".save",
    "visualization_paths": ".save",
    "uniform_slots": ".slots",
}
__all__ = list(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
