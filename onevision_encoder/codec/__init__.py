"""Codec-style patch selection: pick the K patches of a video where it moves and changes.

Importing the package is light (errors, options and presets: the standard library only); the selection itself
(PyAV, OpenCV, torch) loads on first use of its names.
"""

from __future__ import annotations

import importlib
from typing import Any

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
    "VideoFrames": ".reader",
    "compute_codec_visible_indices": ".select",
    "read_video_frames": ".reader",
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


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
