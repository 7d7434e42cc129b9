"""The release's selection pipelines, ``encoder`` and ``lmm``: the geometry and defaults each preset gives
``select_patches`` (every value overridable but ``check_vectors``, ``motion_without_vectors``, the two
normalisation floors and ``estimate_baseline``, which say how a pipeline reads its signals; checked in
:mod:`.options`). Standard library only."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SelectionPreset:
    """Geometry and defaults of one of the release's pipelines."""

    fit: str
    size: int
    patch_size: int
    num_patches: int
    mv_compensate: str
    centre_prior: float
    anchors: str
    static_threshold: float | None
    mv_precision: str
    # The prediction check of coded vectors (compensation.check_against_camera); off: vectors as coded.
    check_vectors: bool
    # Motion of a frame without coded vectors (intra frames, frames the decoder exported none for) in a stream
    # whose codec exports them: "estimate" (optical flow) or "zero" (the release's reader: no vector, no motion).
    motion_without_vectors: str
    # Residual where a frame with coded vectors has none for a cell (intra blocks, list-1-only blocks):
    # "difference" (to the reference, the prediction being zero motion) or "zero" (the release's patched decoder
    # wrote a motion-compensated residual only where a block was predicted from the past).
    residual_without_vectors: str
    mv_norm_floor: float  # floor of the motion energy's per-frame P95 (pixels)
    residual_norm_floor: float  # floor of the residual energy's per-frame P95 (grey levels)
    # Frames back to the reference that motion is estimated against where a stream's motion is estimated
    # throughout (codecs without exportable vectors, or motion="estimate"); divided back to pixels per frame.
    estimate_baseline: int


SELECTION_PRESETS: dict[str, SelectionPreset] = {
    # Encoder training and attentive probe: 224 centre crop, p=14, K=2048 (8 frames' worth);
    # anchors="gop" keeps sampled frames 0, 16, 32, 48 whole as the training data did.
    # Quarter-pel motion: whole pixels lost object precision on generated pans (worst 0.965 vs 0.976,
    # benchmarks/bench_selection_quality.py) and codec/estimated agreement (Jaccard 0.90 vs 0.94).
    # The prediction check, estimated motion for frames without vectors and a 1-pixel motion floor are this
    # package's robustness steps (saliency.py, compensation.py). Estimated motion over two frames: from one frame
    # to the next, x265, VP9 and AV1 leave background near a moving box or in a zoom still, then move it a
    # pixel or two at once; over two frames those moves largely cancel while an object's add up (worst
    # everyday-footage precision 0.865 -> 0.974 qpel, 0.888 -> 0.970 pel; periodic tiles 0.987 -> 0.955 qpel;
    # benchmarks/bench_selection_quality.py); where the motion over one frame is fast, that (saliency.py).
    "encoder": SelectionPreset(
        "short_side_crop",
        224,
        14,
        2048,
        "similarity",
        0.3,
        "gop",
        0.25,
        "qpel",
        True,
        "estimate",
        "difference",
        1.0,
        6.0,
        2,
    ),
    # LLaVA-style LMM: long side 576 zero-padded to 576x576, p=16, K = 8 x 1296, first frame whole.
    # Fidelity to the release's LMM data first: its reader's vectors as coded (whole pixels truncated toward
    # zero, no prediction check), zero motion and no residual where a frame has no vector, its motion floor
    # 1e-6, motion from each frame to the one before. Agreement with its published selection:
    # benchmarks/bench_release_agreement.py.
    "lmm": SelectionPreset(
        "long_side_pad", 576, 16, 8 * 1296, "median", 0.0, "first", None, "pel", False, "zero", "zero", 1e-6, 1.0, 1
    ),
}
