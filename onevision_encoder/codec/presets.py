"""The release's selection pipelines, ``encoder`` and ``lmm``: the geometry and defaults each preset gives
``select_patches`` (every value overridable; checked in :mod:`.options`). Standard library only."""

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


SELECTION_PRESETS: dict[str, SelectionPreset] = {
    # Encoder training and attentive probe: 224 centre crop, p=14, K=2048 (8 frames' worth);
    # anchors="gop" keeps sampled frames 0, 16, 32, 48 whole as the training data did.
    # Quarter-pel motion: whole pixels lost object precision on generated pans (worst 0.965 vs 0.976,
    # benchmarks/bench_selection_quality.py) and codec/estimated agreement (Jaccard 0.90 vs 0.94).
    "encoder": SelectionPreset("short_side_crop", 224, 14, 2048, "similarity", 0.3, "gop", 0.25, "qpel"),
    # LLaVA-style LMM: long side 576 zero-padded to 576x576, p=16, K = 8 x 1296, first frame whole.
    # Whole-pixel vectors truncated toward zero, as the release's reader exported them for the LMM's data.
    "lmm": SelectionPreset("long_side_pad", 576, 16, 8 * 1296, "median", 0.0, "first", None, "pel"),
}
