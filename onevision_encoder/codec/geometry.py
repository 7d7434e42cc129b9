"""Where each pixel of a source frame lands in the model's input (resize, then centre crop or pad)."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .options import FIT_MODES

# Frames are scored at their resized size; OpenCV's remap (motion compensation) takes at most
# SHRT_MAX - 1 pixels a side. A crop of a very elongated frame (16x4000 to a 224 short side) exceeds it.
MAX_RESIZED_SIDE = 32766


@dataclass(frozen=True)
class FrameGeometry:
    """Mapping of a ``source_hw`` frame onto the ``canvas_hw`` model input.

    The frame is resized to ``resized_hw`` and placed with its top-left corner at ``offset``
    (negative: cropped, positive: zero-padded) on a canvas of ``grid_hw`` patches of ``patch_size``.
    """

    source_hw: tuple[int, int]
    resized_hw: tuple[int, int]
    canvas_hw: tuple[int, int]
    offset: tuple[int, int]
    patch_size: int

    @property
    def grid_hw(self) -> tuple[int, int]:
        return self.canvas_hw[0] // self.patch_size, self.canvas_hw[1] // self.patch_size

    def valid_patches(self) -> np.ndarray:
        """Bool ``[Hp, Wp]``: patches wholly inside the frame, without padding (as the release: a patch
        with a strip of padding is never chosen). Content thinner than a patch keeps the patches it touches."""
        p = self.patch_size
        rows = _overlap(self.offset[0], self.resized_hw[0], self.grid_hw[0], p)
        cols = _overlap(self.offset[1], self.resized_hw[1], self.grid_hw[1], p)
        return rows[:, None] & cols[None, :]

    def valid_ranges(self) -> dict[str, list[int]]:
        """First and one-past-last patch row and column that hold content."""
        valid = self.valid_patches()
        rows, cols = np.flatnonzero(valid.any(1)), np.flatnonzero(valid.any(0))
        return {"rows": [int(rows[0]), int(rows[-1]) + 1], "cols": [int(cols[0]), int(cols[-1]) + 1]}

    def to_canvas(self, resized: np.ndarray) -> np.ndarray:
        """Place a ``resized_hw`` array (maps or ``[h, w, C]`` frames) on the canvas, cropping or zero-padding."""
        if resized.shape[:2] != self.resized_hw:
            raise ValueError(f"expected an array of {self.resized_hw}, got {resized.shape[:2]}")
        canvas = np.zeros((*self.canvas_hw, *resized.shape[2:]), dtype=resized.dtype)
        (top, left), (h, w) = self.offset, self.resized_hw
        src_top, src_left = max(0, -top), max(0, -left)
        dst_top, dst_left = max(0, top), max(0, left)
        rows = min(h - src_top, self.canvas_hw[0] - dst_top)
        cols = min(w - src_left, self.canvas_hw[1] - dst_left)
        canvas[dst_top : dst_top + rows, dst_left : dst_left + cols] = resized[
            src_top : src_top + rows, src_left : src_left + cols
        ]
        return canvas

    def patch_sums(self, resized_map: np.ndarray) -> np.ndarray:
        """Sum of a ``resized_hw`` map over each patch of the canvas: ``[Hp, Wp]`` float32."""
        resized_map = resized_map.astype(np.float32, copy=False)
        p, (hp, wp) = self.patch_size, self.grid_hw
        (top, left), (height, width) = self.offset, self.resized_hw
        # Only the band of whole patches that hold content is summed (the others hold padding: zero); a crop's
        # band is the whole canvas, a view of the map.
        rows = slice(max(top, 0) // p, min(-(-(top + height) // p), hp))
        cols = slice(max(left, 0) // p, min(-(-(left + width) // p), wp))
        band_hw = ((rows.stop - rows.start) * p, (cols.stop - cols.start) * p)
        band_top, band_left = top - rows.start * p, left - cols.start * p
        covered = (
            band_top <= 0 and band_left <= 0 and band_top + height >= band_hw[0] and band_left + width >= band_hw[1]
        )
        if covered and resized_map.shape[:2] == self.resized_hw:
            band = resized_map[-band_top : band_hw[0] - band_top, -band_left : band_hw[1] - band_left]
        else:
            band_geometry = FrameGeometry(self.source_hw, self.resized_hw, band_hw, (band_top, band_left), p)
            band = band_geometry.to_canvas(resized_map)
        sums = np.zeros((hp, wp), dtype=np.float32)
        # Area resizing by the whole factor p is the exact mean of each patch.
        band_sums = cv2.resize(band, (cols.stop - cols.start, rows.stop - rows.start), interpolation=cv2.INTER_AREA)
        sums[rows, cols] = band_sums * np.float32(p * p)
        return sums

    def as_dict(self) -> dict[str, object]:
        return {
            "source_hw": list(self.source_hw),
            "resized_hw": list(self.resized_hw),
            "canvas_hw": list(self.canvas_hw),
            "offset": list(self.offset),
            "patch_size": self.patch_size,
            "grid_hw": list(self.grid_hw),
            "valid_ranges": self.valid_ranges(),
        }


def _overlap(offset: int, length: int, count: int, p: int) -> np.ndarray:
    starts = np.arange(count) * p
    inside = (starts >= offset) & (starts + p <= offset + length)
    return inside if inside.any() else (starts + p > offset) & (starts < offset + length)


def plan_geometry(source_hw: tuple[int, int], fit: str, size: int, patch_size: int) -> FrameGeometry:
    """Geometry of a preset.

    ``short_side_crop``: shortest side to ``size`` (the other truncated, as CLIP's processor does),
    centre crop ``size x size``. ``long_side_pad``: longest side to ``size`` (the other rounded),
    centred zero padding to ``size x size``. ``size`` is a multiple of ``patch_size`` (see :mod:`.options`).

    Raises ``ValueError`` for an empty frame, or one so elongated that its resized side would exceed
    :data:`MAX_RESIZED_SIDE`.
    """
    height, width = source_hw
    if height < 1 or width < 1:
        raise ValueError(f"frame size {width}x{height} is empty")
    if fit == "short_side_crop":
        if height <= width:
            resized = (size, int(size * width / height))
        else:
            resized = (int(size * height / width), size)
        offset = (-((resized[0] - size) // 2), -((resized[1] - size) // 2))
    elif fit == "long_side_pad":
        scale = size / max(height, width)
        resized = (max(1, round(height * scale)), max(1, round(width * scale)))
        offset = ((size - resized[0]) // 2, (size - resized[1]) // 2)
    else:
        raise ValueError(f"fit must be one of {FIT_MODES}, got {fit!r}")
    if max(resized) > MAX_RESIZED_SIDE:
        hint = ""
        if fit == "short_side_crop" and size <= MAX_RESIZED_SIDE:
            ratio = MAX_RESIZED_SIDE // size
            hint = f"; {fit} to {size} takes aspect ratios up to {ratio}:1, long_side_pad (preset lmm) any"
        raise ValueError(
            f"frames of {width}x{height} would be scored at {resized[1]}x{resized[0]} ({fit} to {size}), more than "
            f"the {MAX_RESIZED_SIDE} pixels a side that motion compensation (OpenCV remap) supports{hint}"
        )
    return FrameGeometry(source_hw, resized, (size, size), offset, patch_size)
