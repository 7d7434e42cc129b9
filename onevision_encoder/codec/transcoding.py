"""``transcode``: a video re-encoded as the release prepared its training clips, read by the codec reader
(which names bad inputs) and written by :func:`~onevision_encoder.video.encode.write_video`."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from ..video.encode import write_video
from .reader import VideoReader


def transcode(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    codec: str = "hevc",
    gop: int = 16,
    crf: int = 23,
    size: int | tuple[int, int] | None = None,
    preset: str = "fast",
) -> Path:
    """Re-encode ``src`` as the release prepared its training clips (x265 or x264 through PyAV, GOP
    ``gop``, no B-frames, one reference, CRF ``crf``). ``size`` is the short side in pixels or
    ``(width, height)``; frames are turned upright using the source's rotation metadata."""
    with VideoReader(src) as reader:
        info = reader.info
        fps = info.fps or 25
        turns = info.rotation // 90
        target = _target_size(info.display_hw, size)

        def frames() -> Iterator[np.ndarray]:
            for sample in reader.samples(np.arange(info.num_frames)):
                image = np.rot90(sample.frame.to_ndarray(format="rgb24"), turns)
                if image.shape[:2] != target:
                    image = cv2.resize(image, (target[1], target[0]), interpolation=cv2.INTER_AREA)
                yield image

        return write_video(dst, frames(), codec=codec, fps=fps, gop=gop, crf=crf, preset=preset)


def _target_size(display_hw: tuple[int, int], size: int | tuple[int, int] | None) -> tuple[int, int]:
    height, width = display_hw
    if size is None:
        return height // 2 * 2, width // 2 * 2
    if isinstance(size, int):
        scale = size / min(height, width)
        return round(height * scale / 2) * 2, round(width * scale / 2) * 2
    return size[1] // 2 * 2, size[0] // 2 * 2
