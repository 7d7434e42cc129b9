"""Files and frames: which files are media and their output names, opening pictures, writing videos, the
64-frame virtual grid, patch mosaics and generated test clips. May import ``common``."""

from __future__ import annotations

from ..common.lazy import lazy_exports

# Public name -> the module that defines it (loaded on first use: the grid needs torch, writing videos PyAV).
_EXPORTS = {
    "write_video": ".encode",
    "VIRTUAL_FRAMES": ".grid",
    "check_visible_indices": ".grid",
    "chunk_visible_indices": ".grid",
    "frame_positions": ".grid",
    "indices_to_positions": ".grid",
    "positions_to_indices": ".grid",
    "gather_patches": ".patches",
    "mosaic": ".patches",
    "patchify": ".patches",
    "unmosaic": ".patches",
    "unpatchify": ".patches",
}
__all__ = list(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
