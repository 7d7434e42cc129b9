"""Decoded frames as arrays at the selection's working size: the luma plane (read in place where the pixel
format allows) and RGB."""

from __future__ import annotations

import av
import cv2
import numpy as np
from av.video.reformatter import VideoReformatter

# Pixel formats whose first plane is 8-bit luma that can be read without conversion.
EIGHT_BIT_LUMA_FORMATS = frozenset(
    {"yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p", "nv12", "gray"}
)


def luma_of(frame: av.VideoFrame) -> np.ndarray:
    """The frame's 8-bit luma plane ``[H, W]`` (a view where the pixel format allows)."""
    if frame.format.name in EIGHT_BIT_LUMA_FORMATS:
        plane = frame.planes[0]
        rows = np.frombuffer(plane, np.uint8, count=plane.height * plane.line_size)
        return rows.reshape(plane.height, plane.line_size)[:, : plane.width]
    return frame.to_ndarray(format="gray")


def luma_at(frame: av.VideoFrame, hw: tuple[int, int]) -> np.ndarray:
    """Luma downscaled to ``hw``: area averaging by the largest whole factor (OpenCV's fast path), then bilinear."""
    plane = luma_of(frame)
    if plane.shape == hw:
        return np.ascontiguousarray(plane)
    factor = min(plane.shape[0] // hw[0], plane.shape[1] // hw[1])
    if factor >= 2:
        plane = cv2.resize(plane, None, fx=1 / factor, fy=1 / factor, interpolation=cv2.INTER_AREA)
    return cv2.resize(plane, (hw[1], hw[0]), interpolation=cv2.INTER_LINEAR)


def rgb_at(frame: av.VideoFrame, hw: tuple[int, int], reformatter: VideoReformatter) -> np.ndarray:
    """RGB ``[h, w, 3]`` uint8 at ``hw`` (swscale area filter; reuse ``reformatter`` across frames)."""
    if (frame.height, frame.width) == hw:
        return frame.to_ndarray(format="rgb24")
    return reformatter.reformat(frame, width=hw[1], height=hw[0], format="rgb24", interpolation="AREA").to_ndarray()
