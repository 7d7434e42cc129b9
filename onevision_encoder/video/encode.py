"""Writing videos with PyAV's bundled x264/x265 as the release prepared its clips (tests, demos, transcode)."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable, Iterator, Mapping
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from ..files import atomic_path

ENCODERS = {"h264": "libx264", "hevc": "libx265"}


def write_video(
    path: str | os.PathLike[str],
    frames: Iterable[np.ndarray],
    codec: str = "h264",
    fps: float = 25,
    gop: int = 16,
    crf: int = 23,
    preset: str = "fast",
    rotation: int = 0,
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Encode RGB uint8 frames ``[H, W, 3]`` as the release prepared clips: fixed GOP, no B-frames,
    one reference, no scene-cut keyframes, yuv420p. ``rotation`` (degrees) is stored as display
    metadata, ``metadata`` as the container's tags (e.g. ``comment``). Written to a temporary file and
    renamed into place."""
    if codec not in ENCODERS:
        raise ValueError(f"codec must be one of {sorted(ENCODERS)}, got {codec!r}")
    if gop < 1:
        raise ValueError(f"gop must be >= 1, got {gop}")
    with atomic_path(path) as temporary:
        _encode(str(temporary), iter(frames), codec, fps, gop, crf, preset, rotation, metadata or {})
    return Path(path)


def _encode(
    path: str,
    frames: Iterator[np.ndarray],
    codec: str,
    fps: float,
    gop: int,
    crf: int,
    preset: str,
    rotation: int,
    metadata: Mapping[str, str],
) -> None:
    first = next(frames, None)
    if first is None:
        raise ValueError("no frames to encode")
    height, width = first.shape[:2]
    if height % 2 or width % 2:
        raise ValueError(f"frame size {width}x{height} must be even for yuv420p")
    gop_params = f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes=0:ref=1"
    with av.open(path, "w") as container:
        container.metadata.update(metadata)
        stream = container.add_stream(ENCODERS[codec], rate=Fraction(fps).limit_denominator(100000))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        options = {"crf": str(crf), "preset": preset}
        if codec == "h264":
            options["x264-params"] = gop_params
        else:
            options["x265-params"] = f"{gop_params}:log-level=error"
        stream.options = options
        if rotation:
            stream.set_display_rotation(rotation)
        for image in itertools.chain([first], frames):
            if image.shape[:2] != (height, width):
                raise ValueError(f"frame of size {image.shape[1]}x{image.shape[0]} in a {width}x{height} video")
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
