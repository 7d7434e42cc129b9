"""What the pictures read off a selection: its frames (checked), the slots a uniform-frame-sampling baseline
with the same budget keeps whole, the whole (anchor) frames, and where patches were kept."""

from __future__ import annotations

import numpy as np

from ..codec.codec_selection import CodecSelection


def check_frames(selection: CodecSelection) -> np.ndarray:
    """The selection's frames, uint8 ``[T, H, W, 3]``; ``ValueError`` when it holds none or they do not fit its grid."""
    frames = selection.frames
    if frames is None:
        raise ValueError(
            "this selection holds no frames: select with keep_frames=True "
            "(select_patches(..., keep_frames=True)); frames are not saved with a selection"
        )
    t = selection.grid[0]
    if frames.ndim != 4 or frames.shape[0] != t or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 [T={t}, H, W, 3], got shape {frames.shape}")
    return frames


def check_slot(selection: CodecSelection, slot: int) -> int:
    """``slot`` as an int; ``IndexError`` when it is not one of the sampled frames."""
    t = selection.grid[0]
    slot = int(slot)
    if not 0 <= slot < t:
        raise IndexError(f"slot {slot} is out of range for {t} sampled frames")
    return slot


def uniform_slots(selection: CodecSelection) -> np.ndarray:
    """Slots a uniform-frame-sampling baseline with the same token budget keeps whole.

    ``n = K // (Hp*Wp)`` frames (at least 1, at most T) at ``floor(linspace(0, T - 1, n))``, int64.
    """
    t, hp, wp = selection.grid
    n = min(t, max(1, selection.num_patches // (hp * wp)))
    return np.unique(np.floor(np.linspace(0, t - 1, n)).astype(np.int64))


def kept_mask(selection: CodecSelection) -> np.ndarray:
    """Boolean ``[T, Hp, Wp]``: True where a patch was selected."""
    t, hp, wp = selection.grid
    mask = np.zeros(t * hp * wp, dtype=bool)
    mask[selection.visible_indices] = True
    return mask.reshape(t, hp, wp)


def whole_frames(selection: CodecSelection) -> set[int]:
    """The slots kept whole as anchor frames."""
    return {int(s) for s in selection.meta.get("whole_frames", []) or []}
