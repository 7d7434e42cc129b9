"""Writing videos with PyAV's bundled x264/x265 as the release prepared its clips (tests, demos, transcode)."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable, Iterator, Mapping
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from ..common.files import atomic_path

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
        options = _release_options(codec, gop, crf, preset)
        _encode(str(temporary), iter(frames), ENCODERS[codec], fps, options, rotation, metadata or {})
    return Path(path)


def write_video_with_defaults(
    path: str | os.PathLike[str], frames: Iterable[np.ndarray], encoder: str, fps: float = 25
) -> Path:
    """Encode RGB uint8 frames with a PyAV encoder (``libx264``, ``libx265``, ``libvpx-vp9``, ``libsvtav1``, ...)
    at its own default settings (x264: B-frames with b-pyramid, three references, CRF 23), as a user's
    footage usually is; only the encoders' log lines are silenced. Written atomically like :func:`write_video`."""
    options = {"x265-params": "log-level=error"} if encoder == "libx265" else {}
    with atomic_path(path) as temporary:
        _encode(str(temporary), iter(frames), encoder, fps, options, 0, {})
    return Path(path)


def _release_options(codec: str, gop: int, crf: int, preset: str) -> dict[str, str]:
    gop_params = f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes=0:ref=1"
    if codec == "h264":
        return {"crf": str(crf), "preset": preset, "x264-params": gop_params}
    return {"crf": str(crf), "preset": preset, "x265-params": f"{gop_params}:log-level=error"}


def _encode(
    path: str,
    frames: Iterator[np.ndarray],
    encoder: str,
    fps: float,
    options: dict[str, str],
    rotation: int,
    metadata: Mapping[str, str],
) -> None:
    first = next(frames, None)
    if first is None:
        raise ValueError("no frames to encode")
    height, width = first.shape[:2]
    if height % 2 or width % 2:
        raise ValueError(f"frame size {width}x{height} must be even for yuv420p")
    with av.open(path, "w") as container:
        container.metadata.update(metadata)
        stream = container.add_stream(encoder, rate=Fraction(fps).limit_denominator(100000))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
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
