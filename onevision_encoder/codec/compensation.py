"""Camera-motion compensation: remove the global (camera) part of a motion field.

Every vector takes part in the fit, zero vectors included: on a still background the fitted
camera motion is zero and a moving object keeps its motion (the release dropped zero vectors
and fitted the camera to the object). Similarity and affine models are fitted with RANSAC.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import Any

import cv2
import numpy as np

from .options import MV_COMPENSATIONS

METHODS = MV_COMPENSATIONS  # the choices live with the other options

MAX_FIT_POINTS = 2000  # the release used at most 5000; RANSAC needs far fewer for 4 or 6 parameters
MIN_FIT_POINTS = 64
RANSAC_THRESHOLD_PX = 1.0
_ESTIMATORS: dict[str, Callable[..., Any]] = {
    "similarity": cv2.estimateAffinePartial2D,
    "affine": cv2.estimateAffine2D,
}


def compensate_camera(vectors: np.ndarray, method: str) -> np.ndarray:
    """``vectors float32 [Hc, Wc, 2]`` (pixels, one per 4x4 cell) minus the fitted global motion; ``method``
    one of :data:`METHODS` (checked with the other options, see :mod:`.options`)."""
    if method == "none":
        return vectors
    flat = vectors.reshape(-1, 2)
    if method == "mean":
        return vectors - flat.mean(axis=0)
    if method == "median":
        return vectors - np.median(flat, axis=0)
    estimate = _ESTIMATORS[method]
    if flat.shape[0] < MIN_FIT_POINTS:  # too few vectors for a fit: the median translation
        return vectors - np.median(flat, axis=0)
    return vectors - _fitted_field(vectors, estimate)


@lru_cache(maxsize=8)
def _cell_centres(rows: int, cols: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centres (pixels) of the 4x4 cells: x per column, y per row, and all (x, y) pairs."""
    xs = np.arange(cols, dtype=np.float32) * 4 + 2
    ys = np.arange(rows, dtype=np.float32) * 4 + 2
    pairs = np.stack(np.meshgrid(xs, ys), axis=-1).reshape(-1, 2)
    return xs, ys, pairs


def _fitted_field(vectors: np.ndarray, estimate: Callable[..., Any]) -> np.ndarray:
    rows, cols = vectors.shape[:2]
    xs, ys, centres = _cell_centres(rows, cols)
    flat = vectors.reshape(-1, 2)
    step = max(1, flat.shape[0] // MAX_FIT_POINTS)
    source = np.ascontiguousarray(centres[::step])
    target = np.ascontiguousarray(source + flat[::step])
    matrix, _ = estimate(source, target, method=cv2.RANSAC, ransacReprojThreshold=RANSAC_THRESHOLD_PX)
    if matrix is None:  # degenerate point set: fall back to the median translation
        return np.median(flat, axis=0)
    (a, b, tx), (c, d, ty) = matrix.astype(np.float32)
    # The global field A @ p + t - p, evaluated separably over rows and columns.
    field_x = (a - 1) * xs[None, :] + b * ys[:, None] + tx
    field_y = c * xs[None, :] + (d - 1) * ys[:, None] + ty
    return np.stack((field_x, field_y), axis=-1)
