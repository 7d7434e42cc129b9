"""The saliency arithmetic of codec.md, on small hand-made arrays."""

import numpy as np
import pytest

from onevision_encoder.codec.compensation import camera_motion
from onevision_encoder.codec.geometry import plan_geometry
from onevision_encoder.codec.motion import motion_compensated
from onevision_encoder.codec.options import anchor_frames
from onevision_encoder.codec.saliency import (
    SaliencyConfig,
    centre_gaussian,
    fuse,
    motion_energy,
    percentile95,
    relative_speed,
    residual_gradient,
    residual_magnitude,
)
from onevision_encoder.codec.top_k import select_top_k, spread_frames


def test_percentile95_matches_numpy():
    rng = np.random.default_rng(0)
    for shape in ((50, 70), (3, 7), (1, 1)):
        values = rng.integers(0, 256, shape).astype(np.uint8)
        assert percentile95(values) == pytest.approx(np.percentile(values, 95))
        floats = values.astype(np.float32) / 7
        assert percentile95(floats) == pytest.approx(np.percentile(floats, 95))
    steps = np.array([0] * 19 + [10], np.uint8)  # the 95th percentile falls between ranks 18 and 19: 0.5
    assert np.percentile(steps, 95) not in (0, 10) and percentile95(steps) == pytest.approx(np.percentile(steps, 95))


def test_motion_energy_normalises_per_frame_with_a_one_pixel_floor():
    magnitude = np.zeros((20, 20), np.float32)
    magnitude[:10] = 4.0  # half the cells move 4 px: P95 = 4
    magnitude[0, 0] = 8.0
    energy = motion_energy(magnitude, inconsistency=False, floor=1.0)
    assert energy[5, 5] == 1.0 and energy[0, 0] == 1.0 and energy[15, 15] == 0
    jitter = np.zeros((20, 20), np.float32)
    jitter[:2, :2] = 0.25  # under 5% of cells with quarter-pel jitter: P95 = 0, the floor decides
    assert motion_energy(jitter, False, floor=1.0).max() == 0.25
    assert motion_energy(jitter, False, floor=1e-6).max() == 1.0  # the release's binary map


def test_inconsistency_is_the_local_variance():
    magnitude = np.zeros((9, 9), np.float32)
    magnitude[4, 4] = 3.0
    energy = motion_energy(magnitude, inconsistency=True, floor=1e-6)
    assert energy[4, 4] > 0 and energy[0, 0] == 0
    uniform = np.full((9, 9), 2.0, np.float32)  # uniform motion is perfectly consistent
    assert motion_energy(uniform, inconsistency=True, floor=1.0).max() == pytest.approx(0, abs=1e-5)


@pytest.mark.parametrize(
    ("fusion", "weights", "expected"),
    [
        ("weighted", (1, 1), [0.5, 0.6, 0.5]),
        ("weighted", (3, 1), [0.75, 0.7, 0.25]),
        ("max", (1, 1), [1.0, 0.8, 1.0]),
        ("sum", (1, 1), [1.0, 1.0, 1.0]),
        ("geomean", (1, 1), [0.0, np.sqrt(0.32), 0.0]),
    ],
)
def test_fusion_modes(fusion, weights, expected):
    motion = np.array([1.0, 0.8, 0.0], np.float32)
    residual = np.array([0.0, 0.4, 1.0], np.float32)
    fused = fuse(motion, residual, SaliencyConfig(fusion=fusion, fusion_weights=weights))
    np.testing.assert_allclose(fused, expected, rtol=1e-6)


def test_centre_prior_is_a_peak_one_gaussian_of_sigma_035_min_side():
    prior = centre_gaussian((101, 201))
    assert prior[50, 100] == pytest.approx(1.0)
    sigma = 0.35 * 101
    assert prior[50, 100 + 35] == pytest.approx(np.exp(-(35**2) / (2 * sigma**2)), rel=1e-5)
    assert prior[0, 0] < prior[50, 0] < prior[50, 100]


def test_residual_is_the_motion_compensated_error():
    rng = np.random.default_rng(0)
    reference = rng.integers(0, 256, (64, 64)).astype(np.uint8)
    current = np.roll(reference, 2, axis=1)  # content moved right by 2 px
    field = np.zeros((16, 16, 2), np.int32)
    assert residual_magnitude(current, motion_compensated(reference, field, (64, 64)))[:, 4:60].mean() > 20
    field[..., 0] = -8  # each block is found 2 px to the left in the reference: -2 px = -8 qpel
    assert residual_magnitude(current, motion_compensated(reference, field, (64, 64)))[:, 4:60].max() == 0
    assert residual_gradient(current, motion_compensated(reference, field, (64, 64)))[1:-1, 4:60].max() == 0


def test_the_gradient_residual_ignores_a_uniform_error_and_sees_its_edges():
    reference = np.full((32, 32), 100, np.uint8)
    brighter = reference + np.uint8(30)  # the whole frame 30 grey levels brighter: no structure in the error
    still = np.zeros((8, 8, 2), np.int32)
    assert residual_magnitude(brighter, motion_compensated(reference, still, (32, 32))).min() == 30
    assert residual_gradient(brighter, motion_compensated(reference, still, (32, 32))).max() == 0
    square = reference.copy()
    square[8:24, 8:24] = 180  # a new object: its error has edges
    gradient = residual_gradient(square, motion_compensated(reference, still, (32, 32)))
    assert gradient[8, 16] > 100 and gradient[16, 16] == 0  # on the border, not inside
    with pytest.raises(ValueError, match="residual must be one of"):
        SaliencyConfig(residual="squared")


def test_camera_fits_keep_zero_vectors():
    vectors = np.zeros((40, 40, 2), np.float32)
    vectors[10:16, 10:16] = (3.0, 0.0)  # a moving object on a still background
    for method in ("median", "similarity", "affine"):
        compensated = vectors - camera_motion(vectors, method)
        assert np.abs(compensated[0, 0]).max() < 1e-3, method
        assert compensated[12, 12, 0] == pytest.approx(3.0, abs=1e-3), method
    panning = vectors.copy()
    panning[...] += (-2.0, 1.0)  # the camera pans: everything shifts, the object on top
    for method in ("similarity", "affine", "median", "mean"):
        compensated = panning - camera_motion(panning, method)
        assert np.abs(compensated[30, 30]).max() < 0.2, method
        assert compensated[12, 12, 0] > 2.5, method


def test_similarity_fit_removes_a_zoom():
    rows, cols = 30, 40
    ys, xs = np.mgrid[0:rows, 0:cols].astype(np.float32) * 4 + 2
    zoom = np.stack((0.02 * (xs - 80), 0.02 * (ys - 60)), axis=-1)
    assert np.abs(zoom - camera_motion(zoom, "similarity")).max() < 0.05
    assert np.abs(zoom - camera_motion(zoom, "median")).max() > 1


def test_geometry_of_both_fits():
    crop = plan_geometry((720, 1280), "short_side_crop", 224, 14)
    assert crop.resized_hw == (224, 398) and crop.offset == (0, -87) and crop.grid_hw == (16, 16)
    assert crop.valid_patches().all()
    pad = plan_geometry((720, 1280), "long_side_pad", 576, 16)
    assert pad.resized_hw == (324, 576) and pad.offset == (126, 0) and pad.grid_hw == (36, 36)
    assert pad.valid_ranges() == {"rows": [8, 28], "cols": [0, 36]}  # content rows 126..449: whole patches only
    sums = pad.patch_sums(np.ones((324, 576), np.float32))
    assert sums[7, 0] == 2 * 16  # patch rows 112..127 hold content only from row 126 on
    assert sums[10, 3] == 256 and sums[0, 0] == 0
    thin = plan_geometry((10, 1280), "long_side_pad", 576, 16)  # 576x4 content: no patch row is whole
    assert thin.valid_ranges()["rows"] == [17, 19]


def test_selection_keeps_whole_frames_then_best_scores():
    scores = np.zeros((4, 2, 2), np.float32)
    scores[2, 1, 1] = 5
    scores[3, 0, 0] = 4
    scores[1, 0, 1] = 4  # tie with (3, 0, 0): the lower index wins
    valid = np.ones((2, 2), bool)
    order = select_top_k(scores, 7, [0], valid)
    assert order.tolist() == [0, 1, 2, 3, 11, 5, 12]
    assert anchor_frames("gop", 64, 16) == [0, 16, 32, 48]
    assert spread_frames([0, 16, 32, 48], 8, 64) == sorted(set(spread_frames([0, 16, 32, 48], 8, 64)))
    assert len(spread_frames([0, 16, 32, 48], 8, 64)) == 8


def test_frames_that_could_not_be_scored_come_after_every_scored_patch():
    scores = np.zeros((3, 2, 2), np.float32)
    scores[2, 1, 1] = 3  # one patch with signal; K needs four more, all of score 0
    valid = np.ones((2, 2), bool)
    assert select_top_k(scores, 5, [], valid).tolist() == [11, 0, 1, 2, 3]  # ties to the lower index: frame 0
    order = select_top_k(scores, 5, [], valid, unscored=[0])  # frame 0 had no reference
    assert order.tolist() == [11, 4, 5, 6, 7]
    assert select_top_k(scores, 12, [], valid, unscored=[0]).tolist()[-4:] == [0, 1, 2, 3]  # last, not left out


def test_relative_speed_of_one_translation_is_that_of_the_uniform_field():
    rng = np.random.default_rng(3)
    field = rng.integers(-300, 300, (45, 80, 2)).astype(np.int32)
    for camera in (np.float32([1.25, -3.75]), np.float32([0.3, 7.1]), np.float32([0, 0])):
        speeds = relative_speed(field, camera)
        assert speeds.dtype == np.float32 and speeds.shape == (45, 80)
        # The definition, in float64: |field - camera| / 4 pixels.
        difference = (field.astype(np.float64) - camera.astype(np.float64)) / 4
        np.testing.assert_allclose(speeds, np.hypot(difference[..., 0], difference[..., 1]), rtol=1e-6)
        # A translation is the uniform field: the same float32 numbers, bit for bit.
        assert np.array_equal(speeds, relative_speed(field, np.broadcast_to(camera, field.shape)))


@pytest.mark.parametrize(
    ("source_hw", "fit", "size", "patch", "turns"),
    [
        ((720, 1280), "short_side_crop", 224, 14, 0),  # a crop: columns cut off both sides
        ((1280, 720), "short_side_crop", 224, 14, 0),  # rows cut off
        ((480, 640), "short_side_crop", 224, 16, 1),  # a rotated map (a strided view) on a crop
        ((720, 1280), "long_side_pad", 576, 16, 0),  # padding
    ],
)
def test_patch_sums_are_the_sums_over_each_patch_of_the_canvas(source_hw, fit, size, patch, turns):
    geometry = plan_geometry(source_hw, fit, size, patch)
    height, width = geometry.resized_hw
    rng = np.random.default_rng(4)
    coded = rng.random((width, height) if turns % 2 else (height, width), dtype=np.float32)
    resized = np.rot90(coded, turns)
    top, left = geometry.offset
    expected = np.zeros(geometry.grid_hw)
    for row in range(geometry.grid_hw[0]):
        for col in range(geometry.grid_hw[1]):
            # The patch's pixels of the resized map, in its coordinates (padding counts as zero).
            y0, x0 = row * patch - top, col * patch - left
            expected[row, col] = resized[max(y0, 0) : max(y0 + patch, 0), max(x0, 0) : max(x0 + patch, 0)].sum(
                dtype=np.float64
            )
    sums = geometry.patch_sums(resized)
    assert sums.dtype == np.float32
    np.testing.assert_allclose(sums, expected, rtol=1e-5, atol=1e-4)
