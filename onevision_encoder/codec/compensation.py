"""Camera-motion compensation: remove the global (camera) part of a motion field.

Every vector takes part in the fit, zero vectors included: on a still background the fitted
camera motion is zero and a moving object keeps its motion (the release dropped zero vectors
and fitted the camera to the object). Similarity and affine models are fitted by least median of squares
(LMedS): no inlier threshold, so an object moving a pixel a frame cannot pass for part of a still camera
and pull the fit toward it (a RANSAC threshold of 1 px did: whole pixels of its motion against that camera
then truncated to nothing), while noisy flow over a slow zoom still fits (a 0.5 px threshold lost it);
robust while the camera's cells are the majority.

Coded vectors are rate-optimal, not true motion, so :func:`check_against_camera` first tests them
against the pictures: a vector that the camera's motion predicts as well is the camera's.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import Any

import cv2
import numpy as np

from . import motion
from .motion import cell_errors, cell_grid, motion_compensated, predicts_as_well, translated

MAX_FIT_POINTS = 2000  # the release used at most 5000; a robust fit needs far fewer for 4 or 6 parameters
MIN_FIT_POINTS = 64
_ESTIMATORS: dict[str, Callable[..., Any]] = {
    "similarity": cv2.estimateAffinePartial2D,
    "affine": cv2.estimateAffine2D,
}


def camera_motion(vectors: np.ndarray, method: str) -> np.ndarray:
    """The global (camera) motion fitted to ``vectors float32 [Hc, Wc, 2]`` (pixels): a field of the same
    shape, or one ``[2]`` translation that broadcasts to it (``none``: zero)."""
    flat = vectors.reshape(-1, 2)
    if method == "none":
        return np.zeros(2, dtype=np.float32)
    if method == "mean":
        return flat.mean(axis=0)
    if method == "median" or flat.shape[0] < MIN_FIT_POINTS:  # too few vectors for a fit: the median
        return _median(flat)
    return _fitted_field(vectors, _ESTIMATORS[method])


def fit_camera(field_qpel: np.ndarray, method: str) -> np.ndarray:
    """:func:`camera_motion` of an int32 quarter-pel field, in quarter-pel (float32); translations are
    taken on the integers themselves (exact, and a partition of integers is several times faster)."""
    if method in _ESTIMATORS and field_qpel.shape[0] * field_qpel.shape[1] >= MIN_FIT_POINTS:
        # camera_motion(field_qpel * 0.25) * 4, with only the fit's sample scaled to pixels (the same float64
        # values) and the float32 field scaled in place: no full-field temporaries.
        camera = _fitted_field(field_qpel, _ESTIMATORS[method], np.float32(0.25)).astype(np.float32, copy=False)
        camera *= np.float32(4)
        return camera
    return camera_motion(field_qpel, method).astype(np.float32)


def _median(flat: np.ndarray) -> np.ndarray:
    """``np.median(flat, axis=0)`` of ``[N, 2]``, through a partition of each contiguous column."""
    size = flat.shape[0]
    middle = size // 2
    kth = [middle - 1, middle] if size % 2 == 0 and size > 1 else [middle]
    median = np.empty(2, dtype=np.float64)
    for axis in (0, 1):
        column = np.partition(np.ascontiguousarray(flat[:, axis]), kth)
        median[axis] = np.mean(column[kth], dtype=np.float64)
    return median


def check_against_camera(
    field_qpel: np.ndarray,
    method: str,
    luma: np.ndarray,
    reference: np.ndarray,
    luma_hw: tuple[int, int],
    check: bool = True,
    estimated: bool = False,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """The field with each vector checked against the pictures, the camera's motion, and the prediction.

    A rate-distortion encoder codes vectors that predict well, not the true motion: on a flat area any
    vector predicts (skip blocks inherit their neighbours', often a moving object's), on a repetitive
    texture a wrong one may predict as well as the right one. So, on the working planes ``luma`` and
    ``reference``:

    1. cells on a flat part of the reference (:func:`flat_cells`) count as still for the fit, so vectors
       copied across a flat background cannot pass for the camera's motion (a low-contrast texture is not
       flat: a pan over it is the camera's);
    2. the camera's motion is fitted (``method``) to that field;
    3. a cell that the camera's motion predicts as well as its own vector (``MC(Y_ref, v)``, see
       :func:`~.motion.cell_errors`) moves with the camera. Optical flow (``estimated``) is not chosen for
       its rate but fills a flat area in from what surrounds it, so there flat cells follow their region: a
       large flat region (a plain background) moves with the camera, a small one (the flat face of an
       object, where the camera predicts as well as any motion) keeps the flow's motion.

    ``field_qpel`` int32 ``[Hc, Wc, 2]`` quarter-pel. Returns the checked field (int32 quarter-pel), the
    camera's motion (float32 quarter-pel, ``[Hc, Wc, 2]`` or one ``[2]`` translation) and the checked
    field's prediction ``MC(Y_ref, field)`` (uint8, working plane), pixel for pixel from the two predictions
    already made: a camera translation's cells come from :func:`~.motion.translated`, equal to the remap's
    samples for whole pixels and within a grey level's rounding of them for sub-pixel ones. With
    ``check=False`` (the ``lmm`` preset, as the release's reader) the vectors are taken as coded and no camera
    is fitted (None: the caller fits what it needs); with ``motion.PREDICTION_TOLERANCE = None`` the vectors are
    taken as coded and the camera fitted to all of them.
    """
    coded = motion_compensated(reference, field_qpel, luma_hw)
    if not check:
        return field_qpel, None, coded
    if motion.PREDICTION_TOLERANCE is None:
        return field_qpel, fit_camera(field_qpel, method), coded
    flat = flat_cells(reference, luma_hw).view(np.uint8)
    fitted = field_qpel if method == "none" else cv2.copyTo(np.zeros_like(field_qpel), flat, np.array(field_qpel))
    camera = fit_camera(fitted, method)
    own = cell_errors(luma, coded, luma_hw)
    camera_field = np.empty_like(field_qpel)
    if camera.ndim == 1:  # a translation: one warp instead of a remap
        camera_field[...] = np.rint(camera).astype(np.int32)
        following = translated(reference, camera_field[0, 0], luma_hw)
    else:
        np.rint(camera, out=camera_field, casting="unsafe")
        following = motion_compensated(reference, camera_field, luma_hw)
    take = predicts_as_well(cell_errors(luma, following, luma_hw), own)
    if estimated:  # on a flat area the flow is filled in from around it: the surroundings decide
        take = (take & (flat == 0)) | large_regions(flat)
    take = take.view(np.uint8)
    field = cv2.copyTo(camera_field, take, np.array(field_qpel))  # a copy: the caller keeps its field
    pixels = cv2.resize(take, (luma.shape[1], luma.shape[0]), interpolation=cv2.INTER_NEAREST)
    return field, camera, cv2.copyTo(following, pixels, coded)  # the checked field's prediction, no new remap


FLAT_STD = 1.0  # grey levels: below this local standard deviation a picture shows no motion
LARGE_REGION_SHARE = 0.25  # a flat region this share of the frame or more is background


def flat_cells(reference: np.ndarray, luma_hw: tuple[int, int]) -> np.ndarray:
    """Cells of ``luma_hw``'s 4x4 grid whose neighbourhood (3x3 cells) of the working plane ``reference`` is
    flat (standard deviation under :data:`FLAT_STD`): no vector can be told from another there."""
    rows, cols = cell_grid(luma_hw)
    pixels = reference.astype(np.float32)
    mean = cv2.blur(cv2.resize(pixels, (cols, rows), interpolation=cv2.INTER_AREA), (3, 3))
    square = cv2.blur(cv2.resize(pixels * pixels, (cols, rows), interpolation=cv2.INTER_AREA), (3, 3))
    return square - mean * mean < FLAT_STD**2


def large_regions(cells: np.ndarray) -> np.ndarray:
    """The cells (uint8 mask ``[Hc, Wc]``) in 4-connected regions of at least :data:`LARGE_REGION_SHARE` of the
    grid, bool."""
    _, labels, stats, _ = cv2.connectedComponentsWithStats(cells, connectivity=4)
    large = np.flatnonzero(stats[:, cv2.CC_STAT_AREA] >= LARGE_REGION_SHARE * cells.size)
    return np.isin(labels, large[large > 0])  # label 0 is the cells outside every region


@lru_cache(maxsize=8)
def _cell_centres(rows: int, cols: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centres (pixels) of the 4x4 cells: x per column, y per row, and all (x, y) pairs."""
    xs = np.arange(cols, dtype=np.float32) * 4 + 2
    ys = np.arange(rows, dtype=np.float32) * 4 + 2
    pairs = np.stack(np.meshgrid(xs, ys), axis=-1).reshape(-1, 2)
    return xs, ys, pairs


def _fitted_field(vectors: np.ndarray, estimate: Callable[..., Any], scale: np.float32 | None = None) -> np.ndarray:
    """The fitted global field (float32), or the median translation (float64 ``[2]``) if the fit fails;
    ``vectors * scale`` are the vectors in pixels (``scale`` None: ``vectors``)."""
    rows, cols = vectors.shape[:2]
    xs, ys, centres = _cell_centres(rows, cols)
    flat = vectors.reshape(-1, 2)
    step = max(1, flat.shape[0] // MAX_FIT_POINTS)
    sample = flat[::step] if scale is None else flat[::step] * scale
    source = np.ascontiguousarray(centres[::step])
    target = np.ascontiguousarray(source + sample)
    matrix, _ = estimate(source, target, method=cv2.LMEDS)
    if matrix is None:  # degenerate point set: fall back to the median translation
        return _median(flat if scale is None else flat * scale)
    (a, b, tx), (c, d, ty) = matrix.astype(np.float32)
    # The global field A @ p + t - p, evaluated separably over rows and columns.
    field_x = (a - 1) * xs[None, :] + b * ys[:, None] + tx
    field_y = c * xs[None, :] + (d - 1) * ys[:, None] + ty
    return np.stack((field_x, field_y), axis=-1)
