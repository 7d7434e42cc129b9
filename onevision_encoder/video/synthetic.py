"""Generated clips with known motion, for tests, benchmarks and the offline demo.

Each scene is textured (so codecs and optical flow find real motion) and reports where its
moving object is in every frame.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .encode import write_video

SCENES = ("moving_object", "panning", "still", "scene_cut", "shift")
BACKGROUNDS = ("smooth", "blocks", "tiles", "flat")


@dataclass
class SyntheticClip:
    """Frames ``[N, H, W, 3]`` uint8 and the moving object's box per frame (top, left, bottom, right), or None."""

    frames: np.ndarray
    boxes: list[tuple[int, int, int, int] | None]


def texture(height: int, width: int, seed: int, blur: float = 2.0) -> np.ndarray:
    """Smooth random colour texture with strong local contrast, uint8 ``[H, W, 3]``."""
    noise = np.random.default_rng(seed).random((height, width, 3), dtype=np.float32)
    smooth = cv2.GaussianBlur(noise, (0, 0), blur)
    smooth = (smooth - smooth.min()) / max(float(np.ptp(smooth)), 1e-6)
    return (smooth * 255).astype(np.uint8)


def block_texture(height: int, width: int, seed: int, block: int = 4, period: int | None = None) -> np.ndarray:
    """Random colour blocks of ``block`` x ``block`` pixels, uint8 ``[H, W, 3]``; with ``period`` (pixels)
    one random tile of that side repeated: shifts by multiples of it predict as well as the motion."""
    if period is not None:
        tile = block_texture(period, period, seed, block)
        return np.tile(tile, (-(-height // period), -(-width // period), 1))[:height, :width]
    rows, cols = -(-height // block), -(-width // block)
    cells = np.random.default_rng(seed).integers(0, 256, (rows, cols, 3), dtype=np.uint8)
    return np.repeat(np.repeat(cells, block, axis=0), block, axis=1)[:height, :width]


def make_clip(
    scene: str,
    num_frames: int = 48,
    size: tuple[int, int] = (224, 320),
    object_size: int = 48,
    object_speed: float = 4.0,
    pan_speed: float = 2.0,
    shift: tuple[float, float] = (1.5, 0.0),
    cut_at: int | None = None,
    seed: int = 0,
    background: str = "smooth",
) -> SyntheticClip:
    """One of :data:`SCENES` at ``size`` (height, width).

    ``moving_object``: still textured background, a textured square crossing it at ``object_speed``
    px/frame. ``panning``: the background slides by ``pan_speed`` px/frame (a camera pan) while the
    square moves at ``object_speed``. ``still``: nothing moves. ``scene_cut``: the moving square, then
    a different still scene from frame ``cut_at`` (default: the middle frame) on. ``shift``: the whole
    picture translates by ``shift`` (x, y) px/frame with sub-pixel interpolation.

    ``background``: ``smooth`` (a blurred random texture), ``blocks`` (random 4x4-pixel colour blocks,
    see :func:`block_texture`), ``tiles`` (those blocks in a 12-pixel tile repeated: a periodic texture)
    or ``flat`` (one uniform grey: a pan over it is invisible).
    """
    if scene not in SCENES:
        raise ValueError(f"scene must be one of {SCENES}, got {scene!r}")
    if background not in BACKGROUNDS:
        raise ValueError(f"background must be one of {BACKGROUNDS}, got {background!r}")
    height, width = size
    margin = int(abs(pan_speed) * num_frames + abs(shift[0]) * num_frames + abs(shift[1]) * num_frames) + 8
    world_hw = (height + 2 * margin, width + 2 * margin)
    if background in ("blocks", "tiles"):
        world = block_texture(*world_hw, seed, period=12 if background == "tiles" else None)
    elif background == "flat":
        world = np.full((*world_hw, 3), 118, dtype=np.uint8)
    else:
        world = texture(*world_hw, seed)
    other = texture(height, width, seed + 1, blur=3.0)
    patch = texture(object_size, object_size, seed + 2, blur=1.0)
    patch[..., 0] = np.maximum(patch[..., 0], 160)  # a reddish object, distinct from the background
    cut_at = num_frames // 2 if cut_at is None else cut_at
    frames, boxes = [], []
    for index in range(num_frames):
        if scene == "shift":
            matrix = np.float32([[1, 0, -margin - shift[0] * index], [0, 1, -margin - shift[1] * index]])
            frame = cv2.warpAffine(world, matrix, (width, height), flags=cv2.INTER_LINEAR)
            frames.append(frame)
            boxes.append(None)
            continue
        pan = round(pan_speed * index) if scene == "panning" else 0
        frame = world[margin : margin + height, margin + pan : margin + pan + width].copy()
        after_cut = scene == "scene_cut" and index >= cut_at
        if after_cut:
            frame = other.copy()
        box = None
        if scene != "still" and not after_cut:
            left = round(8 + object_speed * index) % max(1, width - object_size)
            top = (height - object_size) // 2
            frame[top : top + object_size, left : left + object_size] = patch
            box = (top, left, top + object_size, left + object_size)
        frames.append(frame)
        boxes.append(box)
    return SyntheticClip(np.stack(frames), boxes)


SOFT_COLOUR = np.float32([110, 130, 100])  # the muted mean colour of soft_texture (RGB)
LUMA_WEIGHTS = np.float32([0.299, 0.587, 0.114])  # BT.601


def soft_texture(height: int, width: int, seed: int, scale: float, contrast: float, grain: float = 2.0) -> np.ndarray:
    """Low-contrast natural texture (grass, sand, a wall, sky with grain), float32 ``[H, W, 3]``: Gaussian noise
    blurred at ``scale`` pixels with standard deviation ``contrast`` grey levels about a muted colour, plus a
    fine luma grain of ``grain`` grey levels."""
    rng = np.random.default_rng(seed)
    blurred = cv2.GaussianBlur(rng.standard_normal((height, width, 3), dtype=np.float32), (0, 0), scale)
    colour = SOFT_COLOUR + blurred * np.float32(contrast / max(float(blurred.std()), 1e-6))
    return colour + rng.standard_normal((height, width, 1), dtype=np.float32) * np.float32(grain)


def make_camera_clip(
    num_frames: int = 64,
    side: int = 224,
    texture_scale: float = 8.0,
    contrast: float = 12.0,
    flat_object: bool = True,
    pan: tuple[float, float] = (1.25, 0.0),
    zoom: float = 0.0,
    object_velocity: tuple[float, float] = (1.5, 0.0),
    object_size: int = 56,
    seed: int = 0,
) -> SyntheticClip:
    """A camera moving over :func:`soft_texture` while a box moves in the picture: everyday footage where many
    vectors predict about equally well.

    The camera pans by ``pan`` (x, y) pixels a frame, sub-pixel positions interpolated, and zooms in by
    ``zoom`` a frame (scale ``1 + zoom * index``); the box (one flat colour at least 40 grey levels of luma from
    the background's mean, or a sharper texture) moves by ``object_velocity`` pixels a frame along a path centred
    in the picture.
    """
    world_side = side * 3
    world = soft_texture(world_side, world_side, seed, texture_scale, contrast)
    rng = np.random.default_rng(seed + 1)
    if flat_object:
        box = np.empty((object_size, object_size, 3), dtype=np.float32)
        box[...] = rng.integers(40, 220, 3)
        # Visible in luma, which codecs and the selection read: at least 40 grey levels from the background's.
        while abs(float(box[0, 0] @ LUMA_WEIGHTS) - float(SOFT_COLOUR @ LUMA_WEIGHTS)) < 40:
            box[...] = rng.integers(40, 220, 3)
    else:
        box = soft_texture(object_size, object_size, seed + 2, 1.5, 40.0)
    travel = [velocity * (num_frames - 1) for velocity in object_velocity]
    if max(abs(t) for t in travel) > side - object_size:
        raise ValueError(f"a box moving {object_velocity} px a frame leaves the picture in {num_frames} frames")
    # The path centred in the picture: the box never leaves it (a jump back would uncover new content).
    start = [(side - object_size - t) / 2 for t in travel]
    frames, boxes = [], []
    for index in range(num_frames):
        scale = 1 + zoom * index
        centre_x, centre_y = world_side / 2 + pan[0] * index, world_side / 2 + pan[1] * index
        half = side / 2 / scale
        to_world = np.float32([[1 / scale, 0, centre_x - half], [0, 1 / scale, centre_y - half]])
        picture = cv2.warpAffine(world, to_world, (side, side), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
        left = round(start[0] + object_velocity[0] * index)
        top = round(start[1] + object_velocity[1] * index)
        picture[top : top + object_size, left : left + object_size] = box
        frames.append(np.clip(picture, 0, 255).astype(np.uint8))
        boxes.append((top, left, top + object_size, left + object_size))
    return SyntheticClip(np.stack(frames), boxes)


def write_clip(path: str | os.PathLike[str], clip: SyntheticClip, codec: str = "h264", **options: object) -> Path:
    """Encode a clip with :func:`write_video` (GOP 16, no B-frames by default)."""
    return write_video(path, clip.frames, codec=codec, **options)


def object_precision(selection: Any, clip: SyntheticClip, margin: int = 0) -> float:
    """Share of a selection's patches of frames t >= 1, the grid's border ring and the frames kept whole
    excluded (a pan brings new content into the ring; whole frames are not chosen by score), that touch the
    clip's moving object (its box mapped through the selection's geometry, grown by ``margin`` patches: the
    patches next to a moving box hold the background it uncovers): how well a selection finds what moves."""
    geometry = selection.meta["geometry"]
    top, left = geometry["offset"]
    scale_y, scale_x = (r / s for r, s in zip(geometry["resized_hw"], geometry["source_hw"], strict=True))
    p = selection.patch_size
    _, rows, cols = selection.grid
    whole = set(selection.meta.get("whole_frames", ()))
    grow = margin * p
    hits = counted = 0
    for t, h, w in selection.positions_thw:
        if t < 1 or t in whole or h in (0, rows - 1) or w in (0, cols - 1):
            continue
        counted += 1
        y0, x0, y1, x1 = clip.boxes[selection.frame_ids[t]]
        y0, y1 = y0 * scale_y + top - grow, y1 * scale_y + top + grow
        x0, x1 = x0 * scale_x + left - grow, x1 * scale_x + left + grow
        hits += bool(h * p < y1 and (h + 1) * p > y0 and w * p < x1 and (w + 1) * p > x0)
    return hits / max(counted, 1)
