"""Motion on the 4x4 luma grid, in quarter-pel units: from the codec's vectors or estimated.

A vector is the displacement from a block of the current frame to its prediction in the reference
frame (:mod:`.reader` says which frame that is), as H.264/HEVC code it: ``reference(x + v) ~ current(x)``.
"""

from __future__ import annotations

import threading
from functools import lru_cache

import cv2
import numpy as np

CELL = 4  # the 4x4 luma blocks on which HEVC and H.264 code motion


def cell_grid(luma_hw: tuple[int, int]) -> tuple[int, int]:
    """Number of 4x4 cells covering a luma plane (partial cells at odd sizes included)."""
    return -(-luma_hw[0] // CELL), -(-luma_hw[1] // CELL)


def rasterize_motion_vectors(vectors: np.ndarray, luma_hw: tuple[int, int]) -> np.ndarray:
    """Codec side data (``AVMotionVector`` records) to a quarter-pel field ``int32 [Hc, Wc, 2]`` (x, y).

    Only past-reference (list 0, ``source < 0``) vectors count; cells without one (intra blocks,
    list-1-only blocks) stay zero. ``motion_x / motion_scale`` pixels are kept exactly as quarter-pel.
    """
    rows, cols = cell_grid(luma_hw)
    field = np.zeros((*_padded_cells(rows, cols), 2), dtype=np.int32)
    # Zero vectors (static and skipped blocks, usually most of them) are the field's initial value.
    motion_x, motion_y = vectors["motion_x"], vectors["motion_y"]
    past = np.flatnonzero((vectors["source"] < 0) & ((motion_x != 0) | (motion_y != 0)))
    if past.size:
        # The few columns needed, gathered one by one (copying whole 40-byte records is several times slower).
        scale = vectors["motion_scale"][past]
        qpel = np.empty((past.size, 2), dtype=np.int32)
        qpel[:, 0] = np.rint(motion_x[past] * 4.0 / scale)
        qpel[:, 1] = np.rint(motion_y[past] * 4.0 / scale)
        # One cell's (x, y) as one int64, so that painting a block is a flat scatter of whole cells.
        _paint_blocks(field.view(np.int64)[..., 0], vectors, past, qpel.view(np.int64).reshape(-1))
    return field[:rows, :cols]


def vector_coverage(vectors: np.ndarray, luma_hw: tuple[int, int]) -> np.ndarray:
    """``uint8 [Hc, Wc]``: 1 on the cells a past-reference vector covers (zero vectors included), 0 on the rest
    (intra blocks, list-1-only blocks)."""
    rows, cols = cell_grid(luma_hw)
    covered = np.zeros(_padded_cells(rows, cols), dtype=np.uint8)
    past = np.flatnonzero(vectors["source"] < 0)
    if past.size:
        _paint_blocks(covered, vectors, past, np.ones(past.size, dtype=np.uint8))
    return covered[:rows, :cols]


def _padded_cells(rows: int, cols: int) -> tuple[int, int]:
    # Room for blocks that reach past the picture (coded sizes are padded to 16-pixel macroblocks).
    return -(-rows // 4) * 4 + 4, -(-cols // 4) * 4 + 4


def _paint_blocks(cells: np.ndarray, vectors: np.ndarray, chosen: np.ndarray, values: np.ndarray) -> None:
    """Writes ``values[i]`` on every cell of the 2-D ``cells`` that block ``vectors[chosen[i]]`` covers."""
    width, height = vectors["w"][chosen].astype(np.int64), vectors["h"][chosen].astype(np.int64)
    block_w = np.maximum(width // CELL, 1)
    block_h = np.maximum(height // CELL, 1)
    left = np.clip((vectors["dst_x"][chosen] - width // 2) // CELL, 0, cells.shape[1] - block_w)
    top = np.clip((vectors["dst_y"][chosen] - height // 2) // CELL, 0, cells.shape[0] - block_h)
    flat = cells.reshape(-1)
    shapes = block_h * 64 + block_w
    # Block shapes in increasing order, later ones painted over earlier ones where they overlap (at the
    # clipped borders); bincount is much faster than np.unique on these few small values. A flat scatter of
    # materialised indices and values is numpy's fast path (a blocked view or a broadcast operand is slower).
    for shape in np.flatnonzero(np.bincount(shapes)):
        members = np.flatnonzero(shapes == shape)
        dy, dx = np.divmod(np.arange((shape // 64) * (shape % 64)), shape % 64)
        corners = top[members] * cells.shape[1] + left[members]
        flat[(corners[:, None] + (dy * cells.shape[1] + dx)).ravel()] = np.repeat(values[members], dy.size)


_flow = threading.local()


def _dis() -> cv2.DISOpticalFlow:
    # One instance per thread: DIS keeps state between calls and is not thread-safe.
    if not hasattr(_flow, "dis"):
        _flow.dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_FAST)
    return _flow.dis


def dominant_shift(flow: np.ndarray) -> tuple[int, int]:
    """The most common whole-pixel vector of a flow field ``[H, W, 2]`` (x, y), counted on every 4th pixel
    of every 4th row (DIS measures on overlapping patches: neighbours repeat each other)."""
    whole = np.rint(flow[::4, ::4]).astype(np.int32)
    low = whole.reshape(-1, 2).min(axis=0)
    span = whole.reshape(-1, 2).max(axis=0) - low + 1
    counts = np.bincount(((whole[..., 1] - low[1]) * span[0] + whole[..., 0] - low[0]).ravel())
    row, column = divmod(int(counts.argmax()), int(span[0]))
    return column + int(low[0]), row + int(low[1])


ALIGNMENT_GAIN = 0.8  # a neighbour replaces the flow's most common vector only if it differs at most this much


def best_alignment(luma: np.ndarray, reference_luma: np.ndarray, shift: tuple[int, int]) -> tuple[int, int]:
    """``shift``, or the whole-pixel neighbour whose shifted reference (``reference(x + s)``) differs clearly
    less from ``luma`` (mean absolute difference inside the margin every candidate keeps, at most
    :data:`ALIGNMENT_GAIN` times ``shift``'s): on a periodic texture the flow's most common vector may be a
    pixel off where its sub-pixel values straddle a rounding boundary. Between near-equal neighbours (a
    motion of a pixel and a half) the flow's own choice stands."""
    margin = max(abs(shift[0]), abs(shift[1])) + 1
    height, width = luma.shape
    if 2 * margin >= min(height, width) // 2:
        return shift
    inner = luma[margin : height - margin, margin : width - margin]

    def difference(x: int, y: int) -> float:
        moved = reference_luma[margin + y : height - margin + y, margin + x : width - margin + x]
        return cv2.norm(inner, moved, cv2.NORM_L1)

    best, best_difference = shift, difference(*shift) * ALIGNMENT_GAIN
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            candidate = (shift[0] + dx, shift[1] + dy)
            if candidate != shift and (value := difference(*candidate)) < best_difference:
                best, best_difference = candidate, value
    return best


def estimate_motion(luma: np.ndarray, reference_luma: np.ndarray, luma_hw: tuple[int, int]) -> np.ndarray:
    """Dense optical flow (OpenCV DIS) from the current frame to its reference, as the codec field.

    Where most of the picture moves (a pan), the flow is measured again with the reference shifted by the
    picture's :func:`dominant_shift` (the shift added back): DIS starts from zero motion at its coarsest
    scale, where a panning repetitive texture (tiles, fences, facades) aliases by whole periods, differently
    from region to region; measured from the pan, only what moves against it is left to find.

    ``luma`` and ``reference_luma`` may be downscaled working planes; the flow is rescaled to pixels of the
    full ``luma_hw`` plane, averaged over each 4x4 cell and rounded to quarter-pel, like coded vectors
    (sub-quarter-pel noise on still areas becomes exactly zero).
    """
    flow = _dis().calc(luma, reference_luma, None)
    shift_x, shift_y = dominant_shift(flow)
    if shift_x or shift_y:  # a whole-pixel shift: exact samples, no interpolation
        shift_x, shift_y = best_alignment(luma, reference_luma, (shift_x, shift_y))
        matrix = np.float32([[1, 0, shift_x], [0, 1, shift_y]])
        flags = cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP
        size = (luma.shape[1], luma.shape[0])
        shifted = cv2.warpAffine(reference_luma, matrix, size, flags=flags, borderMode=cv2.BORDER_REPLICATE)
        flow = _dis().calc(luma, shifted, None)
        flow[..., 0] += shift_x
        flow[..., 1] += shift_y
    scale_x = luma_hw[1] / luma.shape[1]
    scale_y = luma_hw[0] / luma.shape[0]
    rows, cols = cell_grid(luma_hw)
    cells = cv2.resize(flow, (cols, rows), interpolation=cv2.INTER_AREA)
    cells[..., 0] *= scale_x * 4
    cells[..., 1] *= scale_y * 4
    return np.rint(cells).astype(np.int32)


@lru_cache(maxsize=8)
def _pixel_grid(hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0 : hw[0], 0 : hw[1]].astype(np.float32)
    return xs, ys


def motion_compensated(reference: np.ndarray, field_qpel: np.ndarray, luma_hw: tuple[int, int]) -> np.ndarray:
    """``MC(Y_ref, v)`` at the reference plane's resolution; ``v`` is the full-resolution field.

    Each pixel is the bilinear sample of ``reference`` at ``x + v`` (its cell's vector scaled to the plane),
    borders replicated: exact where the displacement is whole pixels of the plane, otherwise OpenCV's 8-bit
    fixed-point interpolation (coordinates on a 1/32-pixel grid, the result rounded), whose rounding differs
    between OpenCV releases by a grey level."""
    work_hw = reference.shape
    size = (work_hw[1], work_hw[0])
    maps = []
    # Per component: quarter-pel to working-plane pixels on the cells, then the nearest-neighbour upscale
    # (which only copies values: the same map as scaling every pixel, with fewer and contiguous passes).
    # One remap with two float maps: an interleaved map or fixed-point maps are slower, or not the same.
    for component, grid in enumerate(_pixel_grid(work_hw)):
        scale = np.float32(work_hw[1 - component] / luma_hw[1 - component] / 4)
        displacement = cv2.resize(
            field_qpel[..., component].astype(np.float32) * scale, size, interpolation=cv2.INTER_NEAREST
        )
        maps.append(np.add(displacement, grid, out=displacement))
    return cv2.remap(reference, maps[0], maps[1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def translated(reference: np.ndarray, vector_qpel: np.ndarray, luma_hw: tuple[int, int]) -> np.ndarray:
    """:func:`motion_compensated` for one vector everywhere, by a warp (several times faster than the remap):
    the same bilinear samples, equal where the displacement is whole pixels of the plane; a sub-pixel one may
    round a grey level apart from the remap's (OpenCV's two paths round differently in some releases)."""
    work_hw = reference.shape
    shift = np.float32(
        [[1, 0, vector_qpel[0] * work_hw[1] / luma_hw[1] / 4], [0, 1, vector_qpel[1] * work_hw[0] / luma_hw[0] / 4]]
    )
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    return cv2.warpAffine(reference, shift, (work_hw[1], work_hw[0]), flags=flags, borderMode=cv2.BORDER_REPLICATE)


def truncate_to_pixels(field_qpel: np.ndarray) -> np.ndarray:
    """Each component truncated toward zero to whole pixels (still in quarter-pel units), as the release's
    reader did (``src - dst`` with C integer division): 7 -> 4, -7 -> -4, 3 -> 0."""
    return np.sign(field_qpel) * (np.abs(field_qpel) // 4 * 4)


# A candidate motion "predicts a cell as well" as the cell's own vector when its motion-compensated error
# (mean |Y - MC(Y_ref, v)| over the cell, grey levels) is at most (1 + relative) x the vector's + absolute.
# Measured on generated pans, periodic textures and flat backgrounds: benchmarks/bench_selection_quality.py.
PREDICTION_TOLERANCE = (0.5, 0.25)
MIN_CELL_PX = 3  # cells are judged over at least this many working-plane pixels a side


def cell_errors(luma: np.ndarray, prediction: np.ndarray, luma_hw: tuple[int, int]) -> np.ndarray:
    """Mean ``|luma - prediction|`` over each 4x4 cell of the ``luma_hw`` plane, float32 ``[Hc, Wc]``;
    ``luma`` and ``prediction`` are working planes, judged over at least 3x3 of their pixels."""
    rows, cols = cell_grid(luma_hw)
    difference = cv2.absdiff(luma, prediction).astype(np.float32)
    (height, width), cell_px = luma.shape, CELL * min(luma.shape[0] / luma_hw[0], luma.shape[1] / luma_hw[1])
    if height % rows == 0 and width % cols == 0 and min(height // rows, width // cols) >= MIN_CELL_PX:
        return cv2.resize(difference, (cols, rows), interpolation=cv2.INTER_AREA)  # whole pixels per cell: fast
    # Otherwise a box mean about a cell wide sampled at the cell centres (INTER_AREA is several times slower
    # at fractional ratios).
    side = max(MIN_CELL_PX, round(cell_px))
    return cv2.resize(cv2.blur(difference, (side, side)), (cols, rows), interpolation=cv2.INTER_LINEAR)


def predicts_as_well(candidate_errors: np.ndarray, own_errors: np.ndarray) -> np.ndarray:
    """Cells where a candidate motion predicts within :data:`PREDICTION_TOLERANCE` of the cell's own vector."""
    relative, absolute = PREDICTION_TOLERANCE
    return candidate_errors <= own_errors * (1 + relative) + absolute
