"""The ``lmm`` preset against a selection the release's own pipeline published (tests/fixtures/release_lmm_sample).

The LMM checkpoints were trained on selections made that way, so the preset follows the release's steps: its
reader's vectors as coded (whole pixels truncated toward zero, no check against the pictures), zero motion for
frames without vectors and no residual on cells without a past vector (its patched decoder wrote a
motion-compensated residual only there), median camera compensation, P95 normalisation with floors 1e-6 / 1, 1:1
fusion. The measure is the Jaccard index of the (t, h, w) sets over t >= 1 (random: about 0.11). Figures measured
(benchmarks/bench_release_agreement.py): motion only 0.683, residual only 0.218, both 0.707 (0.53 before these
steps). The issue's goal for both is 0.70, which the test asserts; the others sit 0.02 below the figures: the
selection is deterministic, but the residual's bilinear prediction may round a grey level apart between OpenCV
releases, which moves a few patches at the K boundary (0.007 of agreement is about 60 of its 9,648 patches).
"""

import json
from pathlib import Path

import numpy as np
import pytest

from onevision_encoder.codec import select_patches
from onevision_encoder.codec.codec_selection import selection_agreement
from onevision_encoder.codec.options import SelectionOptions

SAMPLE = Path(__file__).resolve().parent / "fixtures" / "release_lmm_sample"
VIDEO = SAMPLE / "ytb_XwB-dkS5BVM.mp4"


@pytest.fixture(scope="module")
def release_thw() -> np.ndarray:
    return np.load(SAMPLE / "stage1.visidx_thw.npy")


@pytest.mark.parametrize(
    ("fusion_weights", "minimum"),
    [((1.0, 0.0), 0.66), ((0.0, 1.0), 0.2), ((1.0, 1.0), 0.70)],
    ids=["motion_only", "residual_only", "motion_and_residual"],
)
def test_lmm_preset_reproduces_the_release_selection(release_thw, fusion_weights, minimum):
    selection = select_patches(VIDEO, preset="lmm", fusion_weights=fusion_weights)
    assert selection_agreement(selection.positions_thw, release_thw) >= minimum


def test_lmm_preset_samples_and_pads_as_the_release():
    selection = select_patches(VIDEO, preset="lmm", fusion_weights=(1.0, 0.0))
    release_meta = json.loads((SAMPLE / "stage1.meta.json").read_text())
    ranges = release_meta["valid_ranges"]
    assert np.array_equal(selection.frame_ids, np.load(SAMPLE / "stage1.frame_ids.npy"))
    assert selection.meta["valid_ranges"] == {
        "rows": [ranges["valid_h_start"], ranges["valid_h_end"]],
        "cols": [ranges["valid_w_start"], ranges["valid_w_end"]],
    }
    assert selection.visible_indices.size == release_meta["K"]


def test_robustness_steps_are_the_encoder_presets_only():
    lmm, encoder = SelectionOptions.resolve(preset="lmm"), SelectionOptions.resolve(preset="encoder")
    steps = ("check_vectors", "motion_without_vectors", "residual_without_vectors", "mv_norm_floor")
    assert [getattr(lmm, step) for step in steps] == [False, "zero", "zero", 1e-6]
    assert [getattr(encoder, step) for step in steps] == [True, "estimate", "difference", 1.0]


def test_selection_agreement_is_the_jaccard_index_past_frame_0():
    ours = np.array([[0, 0, 0], [1, 0, 0], [1, 0, 1], [2, 3, 4]])
    theirs = np.array([[0, 5, 5], [1, 0, 0], [2, 3, 4], [3, 1, 1]])
    assert selection_agreement(ours, theirs) == pytest.approx(2 / 4)
    assert selection_agreement(ours, theirs, first_frame=0) == pytest.approx(2 / 6)
