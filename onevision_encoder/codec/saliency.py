"""Per-frame saliency: motion and residual energies, normalised per frame, fused, summed per patch.

Energies (codec.md): motion ``|v|`` after camera compensation, normalised by its 95th percentile
(floor ``mv_norm_floor``); residual ``|Y - MC(Y_ref, v)|`` normalised by its 95th percentile (floor
``residual_norm_floor``); fused by ``weighted`` / ``max`` / ``sum`` / ``geomean``; optionally
boosted by a centred Gaussian prior. The vectors are first checked against the pictures (a vector the
camera's motion predicts as well is the camera's, :func:`~.compensation.check_against_camera`; not for the
``lmm`` preset, which takes them as coded like the release's reader, ``check_vectors=False``), and with
``mv_precision="pel"`` truncated toward zero to whole pixels before the camera is fitted, as the
release's reader did.

The default motion floor is a deliberate departure from the release (which used 1e-6; the ``lmm`` preset
keeps 1e-6, for fidelity to the release's data): when fewer than 5% of
a frame's cells move a lot, P95 sits at the encoder's quarter-pel jitter, and with a tiny floor that
jitter scores 1 like the moving object itself. A floor of 1 pixel keeps real motion (>= 1 px per
frame) at full score and jitter at a quarter of it; frames with a wider motion spread are unchanged.
With whole pixels and a translation (the ``lmm`` preset) the floor changes nothing (any motion left is
at least a pixel); after a similarity fit, whose field is fractional, it still matters.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache

import cv2
import numpy as np

from .compensation import check_against_camera, fit_camera
from .geometry import FrameGeometry
from .motion import cell_grid, estimate_motion, rasterize_motion_vectors, truncate_to_pixels, vector_coverage
from .options import FUSIONS as FUSIONS  # the choices live with the other options
from .options import MOTION_MODES as MOTION_MODES
from .options import MV_PRECISIONS as MV_PRECISIONS
from .options import RESIDUAL_MODES as RESIDUAL_MODES
from .options import check_saliency


@dataclass(frozen=True)
class SaliencyConfig:
    """How a frame's signals become one map. Defaults are the release's."""

    mv_compensate: str = "similarity"
    mv_precision: str = "pel"  # "pel": components truncated toward zero to whole pixels (the release); "qpel"
    fusion: str = "weighted"
    fusion_weights: tuple[float, float] = (1.0, 1.0)
    inconsistency: bool = False
    residual: str = "abs"  # "gradient": the residual's gradient magnitude (edges of the error), not |error|
    centre_prior: float = 0.0
    mv_norm_floor: float = 1.0
    residual_norm_floor: float = 1.0
    check_vectors: bool = True  # False: the vectors as coded, as the release's reader (compensation.py)
    residual_without_vectors: str = "difference"  # "zero": no residual on cells without a past vector (presets.py)

    def __post_init__(self) -> None:  # the selection's own checks (options.py), normalised values kept
        checked = check_saliency(
            self.mv_compensate, self.mv_precision, self.fusion, self.fusion_weights, self.residual, self.centre_prior
        )
        names = ("mv_compensate", "mv_precision", "fusion", "fusion_weights", "residual", "centre_prior")
        for name, value in zip(names, checked, strict=True):
            object.__setattr__(self, name, value)

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass
class FrameScores:
    """Scores of one sampled frame on the model's patch grid."""

    patch_scores: np.ndarray
    patch_motion: np.ndarray | None  # mean motion (pixels) per patch; None when not measured
    motion_source: str


def percentile95(values: np.ndarray) -> float:
    """95th percentile, interpolated between ranks as ``np.percentile`` (the release's); uint8 data
    goes through a histogram, which is much faster than sorting."""
    position = 0.95 * (values.size - 1)
    low = int(position)
    high = min(low + 1, values.size - 1)
    if values.dtype == np.uint8:
        if values.size < 2**24:
            # cv2.calcHist is about 3x faster than np.bincount (which widens every value to intp); its
            # float32 counts are exact below 2**24.
            plane = np.ascontiguousarray(values).reshape(-1, 1)
            counts = cv2.calcHist([plane], [0], None, [256], [0, 256]).ravel().astype(np.int64).cumsum()
        else:
            counts = np.bincount(values.ravel(), minlength=256).cumsum()
        below, above = np.searchsorted(counts, [low, high], side="right")
    else:
        ranked = np.partition(values.ravel(), [low, high])
        below, above = ranked[low], ranked[high]
    return float(below + (float(above) - float(below)) * (position - low))


def motion_energy(magnitude: np.ndarray, inconsistency: bool, floor: float) -> np.ndarray:
    """``[Hc, Wc]`` in [0, 1]: ``|v|`` (or its 3x3 local variance) over its per-frame P95."""
    if inconsistency:
        mean = cv2.blur(magnitude, (3, 3))
        magnitude = np.maximum(cv2.blur(magnitude * magnitude, (3, 3)) - mean * mean, 0)
    return np.clip(magnitude / max(percentile95(magnitude), floor), 0, 1)


def speed(vectors_px: np.ndarray) -> np.ndarray:
    """``|v|`` of a ``[..., 2]`` field, float32. (Not ``cv2.magnitude``: its SIMD path rounds differently
    with the arrays' alignment, so equal inputs could give scores 1 ulp apart from run to run.)"""
    return np.hypot(vectors_px[..., 0], vectors_px[..., 1], dtype=np.float32)


def relative_speed(field_qpel: np.ndarray, camera_qpel: np.ndarray) -> np.ndarray:
    """:func:`speed` in pixels of ``field - camera`` (int32 and float32 quarter-pel), in float32 throughout.

    The same numbers as ``speed((field - camera) * 0.25)``, which numpy computes in float64 (int32 with
    float32): the integers are exact in float32, a float64 difference rounded to float32 is the float32
    difference (double rounding is harmless for 53 >= 2 * 24 + 2 bits), and a quarter is exact.
    """
    pixels = field_qpel.astype(np.float32)
    if camera_qpel.ndim == 1:  # one translation: a scalar per component (numpy broadcasts a last axis of 2 slowly)
        pixels[..., 0] -= camera_qpel[0]
        pixels[..., 1] -= camera_qpel[1]
    else:
        pixels -= camera_qpel
    pixels *= np.float32(0.25)
    return speed(pixels)


def residual_magnitude(luma: np.ndarray, prediction: np.ndarray) -> np.ndarray:
    """``|Y - MC(Y_ref, v)|`` (uint8) at the planes' resolution, from the prediction ``MC(Y_ref, v)``."""
    return cv2.absdiff(luma, prediction)


def residual_gradient(luma: np.ndarray, prediction: np.ndarray) -> np.ndarray:
    """Gradient magnitude (3x3 Sobel) of the signed residual ``Y - MC(Y_ref, v)``, float32."""
    signed = luma.astype(np.float32) - prediction
    return np.hypot(cv2.Sobel(signed, cv2.CV_32F, 1, 0), cv2.Sobel(signed, cv2.CV_32F, 0, 1))


def fuse(motion: np.ndarray, residual: np.ndarray, config: SaliencyConfig) -> np.ndarray:
    w_mv, w_res = config.fusion_weights
    if config.fusion == "weighted":
        return (w_mv * motion + w_res * residual) / (w_mv + w_res)
    if config.fusion == "max":
        return np.maximum(motion, residual)
    if config.fusion == "sum":
        return np.minimum(motion + residual, 1.0)
    total = w_mv + w_res
    return motion ** (w_mv / total) * residual ** (w_res / total)


@lru_cache(maxsize=8)
def centre_gaussian(hw: tuple[int, int]) -> np.ndarray:
    """Peak-1 Gaussian centred on the frame, sigma = 0.35 * min(H, W)."""
    ys, xs = np.mgrid[0 : hw[0], 0 : hw[1]].astype(np.float32)
    sigma = 0.35 * min(hw)
    return np.exp(-(((ys - (hw[0] - 1) / 2) ** 2 + (xs - (hw[1] - 1) / 2) ** 2) / (2 * sigma**2)))


@lru_cache(maxsize=8)
def _centre_boost(hw: tuple[int, int], centre_prior: float) -> np.ndarray:
    """``1 + centre_prior * centre_gaussian(hw)``, the same for every frame of a geometry."""
    boost = 1 + centre_prior * centre_gaussian(hw)
    boost.flags.writeable = False
    return boost


def motion_field(
    luma: np.ndarray,
    reference_luma: np.ndarray,
    motion_vectors: np.ndarray | None,
    is_intra: bool,
    luma_hw: tuple[int, int],
    motion: str,
) -> tuple[np.ndarray, str]:
    """Quarter-pel field of a frame and where it came from (``codec`` or ``estimate``)."""
    has_vectors = motion_vectors is not None and not is_intra
    if motion == "estimate" or (motion == "auto" and not has_vectors):
        return estimate_motion(luma, reference_luma, luma_hw), "estimate"
    if motion_vectors is None:  # motion="codec" on an intra frame: intra blocks have no vector
        return np.zeros((*cell_grid(luma_hw), 2), dtype=np.int32), "codec"
    return rasterize_motion_vectors(motion_vectors, luma_hw), "codec"


def _motion_against_camera(
    coded: np.ndarray,
    estimated: bool,
    luma: np.ndarray,
    reference_luma: np.ndarray,
    luma_hw: tuple[int, int],
    config: SaliencyConfig,
    camera_wanted: bool,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Pixels of motion against the camera per cell (at the config's ``mv_precision``), the camera's motion
    (None where neither that nor ``camera_wanted`` needs it fitted) and the prediction, from the ``coded``
    (or ``estimated``) field checked against the pictures."""
    field, camera, prediction = check_against_camera(
        coded, config.mv_compensate, luma, reference_luma, luma_hw, config.check_vectors, estimated
    )
    if camera is None and (config.mv_precision == "qpel" or camera_wanted):  # vectors as coded: fit them now
        camera = fit_camera(field, config.mv_compensate)
    if config.mv_precision == "pel" and config.check_vectors:
        # Whole pixels of the motion against the camera, the camera on the vectors' quarter-pel grid first: a
        # fitted camera a hair off zero must not truncate an object's exact 1 px to 0.
        magnitude = speed(truncate_to_pixels(field - np.rint(camera).astype(np.int32)) * np.float32(0.25))
    elif config.mv_precision == "pel":  # whole pixels, then the camera refitted to them (the release's order)
        whole = truncate_to_pixels(field)
        magnitude = relative_speed(whole, fit_camera(whole, config.mv_compensate))
    else:
        magnitude = relative_speed(field, camera)
    return magnitude, camera, prediction


FAST_MOTION_PX = 4.0  # pixels a frame: motion this fast against the camera is measured over one frame


def _fast_over_one_frame(
    magnitude: np.ndarray,
    luma: np.ndarray,
    previous_luma: np.ndarray,
    luma_hw: tuple[int, int],
    config: SaliencyConfig,
) -> tuple[np.ndarray, np.ndarray]:
    """Motion a frame (``magnitude``, measured over several) where it is slow, the motion over one frame where
    that is :data:`FAST_MOTION_PX` or more, and the prediction from the frame before. The flow does not find
    an object that moves further over the gap than it searches (a 10 px/frame object reads under 2 px/frame
    over two frames), and the background an object uncovers, in the residual, grows with the gap; what the gap
    is there for, background an encoder holds back and then moves at once, moves a pixel or two."""
    over_one, _, prediction = _motion_against_camera(
        estimate_motion(luma, previous_luma, luma_hw), True, luma, previous_luma, luma_hw, config, False
    )
    return np.where(over_one >= FAST_MOTION_PX, over_one, magnitude), prediction


def score_frame(
    luma: np.ndarray,
    reference_luma: np.ndarray | None,
    motion_vectors: np.ndarray | None,
    is_intra: bool,
    luma_hw: tuple[int, int],
    rotation: int,
    geometry: FrameGeometry,
    config: SaliencyConfig,
    motion: str,
    measure_motion: bool = True,
    reference_gap: int = 1,
    previous_luma: np.ndarray | None = None,
) -> FrameScores:
    """Patch scores of one sampled frame.

    ``luma`` and ``reference_luma`` are working-resolution planes in coded orientation (the frame is
    later turned by ``rotation`` onto ``geometry``); ``luma_hw`` is the full luma size the vectors
    refer to. A frame without reference (the video's first) scores 0. ``measure_motion=False`` leaves
    ``patch_motion`` (the still-clip test's measure) None, for a selection without that test.
    ``reference_gap``: frames from the reference to this frame. Motion estimated over several frames is
    divided by it, to pixels per frame (the floor and the still test are per frame); coded vectors are
    taken as the displacement to their reference, as the release did. ``previous_luma``: the frame just
    before, where the reference lies further back (:func:`_fast_over_one_frame` measures against it too).
    """
    grid = geometry.grid_hw
    if reference_luma is None:
        zeros = np.zeros(grid, dtype=np.float32)
        return FrameScores(zeros, zeros.copy() if measure_motion else None, "none")
    coded, source = motion_field(luma, reference_luma, motion_vectors, is_intra, luma_hw, motion)
    magnitude, camera, prediction = _motion_against_camera(
        coded, source == "estimate", luma, reference_luma, luma_hw, config, measure_motion
    )
    gap = np.float32(reference_gap if source == "estimate" else 1)
    if gap > 1:
        magnitude /= gap
        if previous_luma is not None:
            magnitude, prediction = _fast_over_one_frame(magnitude, luma, previous_luma, luma_hw, config)
    work_hw = luma.shape
    size = (work_hw[1], work_hw[0])
    motion_map = cv2.resize(
        motion_energy(magnitude, config.inconsistency, config.mv_norm_floor), size, interpolation=cv2.INTER_AREA
    )
    # The release's patched decoder wrote a motion-compensated residual only into blocks predicted from the past:
    # elsewhere the clean residual is a difference to the reference that its selections never scored.
    predicted = None
    if config.residual_without_vectors == "zero" and source == "codec" and motion_vectors is not None and not is_intra:
        predicted = cv2.resize(vector_coverage(motion_vectors, luma_hw), size, interpolation=cv2.INTER_NEAREST)
    if config.residual == "gradient":
        gradient = residual_gradient(luma, prediction)
        if predicted is not None:
            gradient *= predicted
        residual_map = np.minimum(gradient / max(percentile95(gradient), config.residual_norm_floor), 1)
    else:
        residual = residual_magnitude(luma, prediction)
        if predicted is not None:
            residual *= predicted
        # residual is uint8: normalise through a 256-entry table (cv2.LUT copies its entries, several times
        # faster than numpy's indexing).
        scale = max(percentile95(residual), config.residual_norm_floor)
        residual_map = cv2.LUT(residual, np.minimum(np.arange(256, dtype=np.float32) / np.float32(scale), 1))
    fused = fuse(motion_map, residual_map, config)
    if config.centre_prior:
        fused = np.minimum(fused * _centre_boost(work_hw, config.centre_prior), 1.0)
    turns = rotation // 90
    patch_motion = None
    if measure_motion:
        # The still-clip test measures the motion as coded (or estimated), quarter-pel, relative to the camera:
        # whole pixels would call a clip still whose object moves under a pixel a frame, and the check may
        # give a small object's rough estimated motion to the camera (its residual still scores it).
        motion_px = cv2.resize(relative_speed(coded, camera) / gap, size, interpolation=cv2.INTER_AREA)
        patch_motion = geometry.patch_sums(np.rot90(motion_px, turns)) / geometry.patch_size**2
    return FrameScores(
        patch_scores=geometry.patch_sums(np.rot90(fused, turns)), patch_motion=patch_motion, motion_source=source
    )
