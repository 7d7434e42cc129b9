"""Video utilities: the virtual frame grid, patch mosaics, and writing videos."""

from .encode import write_video
from .grid import (
    VIRTUAL_FRAMES,
    check_visible_indices,
    chunk_visible_indices,
    frame_positions,
    indices_to_positions,
    positions_to_indices,
)
from .mosaic import gather_patches, mosaic, patchify, unmosaic, unpatchify

__all__ = [
    "VIRTUAL_FRAMES",
    "check_visible_indices",
    "chunk_visible_indices",
    "frame_positions",
    "gather_patches",
    "indices_to_positions",
    "mosaic",
    "patchify",
    "positions_to_indices",
    "unmosaic",
    "unpatchify",
    "write_video",
]
