"""Codec-style patch selection: pick the K patches of a video where it moves and changes.

Importing the package is light (errors, options and presets: the standard library only); the selection itself
(PyAV, OpenCV, torch) loads on first use of its names. May import ``video`` and ``common``.
"""

from __future__ import annotations

from ..common.lazy import lazy_exports
from .errors import (
    CorruptVideoError,
    ImageNotVideoError,
    NotAVideoError,
    SelectionError,
    VideoError,
    VideoNotFoundError,
)
from .options import OptionError, SelectionOptions
from .presets import SELECTION_PRESETS, SelectionPreset

# Public name -> the module that defines it, imported on first use.
_LAZY = {
    "CodecConfig": ".codec_video",
    "CodecSelection": ".codec_selection",
    "CodecVideoOutput": ".codec_video",
    "fetch_codec_video": ".codec_video",
    "process_video_info": ".codec_video",
    "VideoFrames": ".frames",
    "compute_codec_visible_indices": ".select",
    "read_video_frames": ".frames",
    "select_patches": ".select",
    "transcode": ".transcoding",
}

__all__ = [
    "SELECTION_PRESETS",
    "CodecConfig",
    "CodecSelection",
    "CodecVideoOutput",
    "CorruptVideoError",
    "ImageNotVideoError",
    "NotAVideoError",
    "OptionError",
    "SelectionError",
    "SelectionOptions",
    "SelectionPreset",
    "VideoError",
    "VideoFrames",
    "VideoNotFoundError",
    "compute_codec_visible_indices",
    "fetch_codec_video",
    "process_video_info",
    "read_video_frames",
    "select_patches",
    "transcode",
]


__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
