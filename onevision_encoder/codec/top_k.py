"""The top-K rule: whole (anchor) frames kept first, then one global top-K over everything else; the still-clip
fallback (whole frames spread over the clip). Which frames are anchors: ``anchor_frames`` in :mod:`.options`."""

from __future__ import annotations

import numpy as np


def is_static(patch_motion: np.ndarray, valid: np.ndarray, threshold_px: float) -> bool:
    """True when the clip barely moves: the 99th percentile of the patches' mean motion is below the threshold."""
    return float(np.percentile(patch_motion[:, valid], 99)) < threshold_px


def spread_frames(forced: list[int], total: int, num_samples: int) -> list[int]:
    """``forced`` plus uniformly spaced other frames, ``total`` frames in all (for the static fallback)."""
    others = [t for t in range(num_samples) if t not in set(forced)]
    extra = max(0, min(total, num_samples) - len(forced))
    picks = np.floor(np.linspace(0, len(others) - 1, extra)).astype(int) if extra and others else []
    return sorted(set(forced) | {others[i] for i in picks})


def select_top_k(
    scores: np.ndarray, k: int, whole_frames: list[int], valid: np.ndarray, unscored: list[int] | None = None
) -> np.ndarray:
    """Flat indices of the K patches, in score order: whole frames first, then the best-scoring others.

    ``scores`` is ``[T, Hp, Wp]``. Whole frames are kept entirely, padding included (so a whole frame
    is a complete picture, as the release's first LMM mosaic); elsewhere ``valid`` ``[Hp, Wp]``
    excludes patches (padding) that are never chosen. Ties go to the lower index: deterministic. The
    ``unscored`` frames (no reference to score against: the video's first) come after every scored patch,
    so that when fewer than K patches carry any signal the rest are not taken from a frame never measured.
    """
    num_samples = scores.shape[0]
    selectable = np.broadcast_to(valid, scores.shape).reshape(-1)
    frame_of = np.repeat(np.arange(num_samples), valid.size)
    whole = np.isin(frame_of, whole_frames)
    forced = np.flatnonzero(whole)
    if forced.size > k:
        raise ValueError(f"the {len(whole_frames)} whole frames hold {forced.size} patches, more than K={k}")
    candidates = np.flatnonzero(selectable & ~whole)
    needed = k - forced.size
    if needed > candidates.size:
        raise ValueError(
            f"K={k} is larger than the {forced.size + candidates.size} selectable patches "
            "(patches with padding are taken only in whole frames)"
        )
    last = np.isin(frame_of[candidates], unscored or [])
    order = np.lexsort((-scores.reshape(-1)[candidates], last))[:needed]  # stable: ties to the lower index
    return np.concatenate((forced, candidates[order])).astype(np.int64)
