"""Motion as the selection reads it: coded vectors checked against the pictures (rate-optimal vectors are
not true motion), and their precision (whole pixels truncated toward zero as the release, or quarter-pel).

Ground truth comes from generated clips whose moving object's box is known in every frame."""

import argparse

import cv2
import numpy as np
import pytest
from conftest import write_stream

from onevision_encoder.cli.options import add_selection_options, selection_options
from onevision_encoder.codec import OptionError, select_patches
from onevision_encoder.codec import motion as motion_module
from onevision_encoder.codec.bitstream import h264_reference_frames
from onevision_encoder.codec.compensation import check_against_camera, fit_camera
from onevision_encoder.codec.geometry import plan_geometry
from onevision_encoder.codec.motion import (
    cell_grid,
    motion_compensated,
    translated,
    truncate_to_pixels,
    vector_coverage,
)
from onevision_encoder.codec.options import SelectionOptions
from onevision_encoder.codec.presets import SELECTION_PRESETS
from onevision_encoder.codec.reader import VideoReader
from onevision_encoder.codec.saliency import SaliencyConfig, score_frame
from onevision_encoder.video.encode import write_video, write_video_with_defaults
from onevision_encoder.video.synthetic import block_texture, make_camera_clip, make_clip, object_precision, texture

# (codec, background, camera pan px/frame, object speed px/frame, seed). As the clip: 224x224,
# x264 GOP 16 without B-frames at CRF 18 (H.264: codec vectors; HEVC: estimated motion), an 80-pixel
# textured object, K=2048 over 64 frames (the object's patches fill it). Precision of the vectors as
# coded, before the check: tiles 0.88 and 0.93, flat 0.45 (static) and 0.81 (panning), HEVC flat 0.949;
# the others 0.98-1.
CLIPS = [
    ("h264", "tiles", 2, 2, 1),  # a periodic texture: wrong vectors predict as well as the pan
    ("h264", "tiles", 2, 2, 2),
    ("h264", "flat", 0, 2, 0),  # skip blocks copy the object's vector across a flat background
    ("h264", "flat", 2, -1, 1),
    ("hevc", "flat", 0, 2, 0),  # optical flow spills off the object onto the flat background
    ("h264", "smooth", 2, 2, 2),
    ("h264", "smooth", 0, 1, 1),
    ("h264", "blocks", 3, 1.5, 0),
    ("hevc", "smooth", 2, -1, 2),
    # optical flow aliases by whole periods on a panning periodic texture, differently from region to region,
    # unless it is measured from the picture's dominant shift (before that: 0.46-0.59)
    ("hevc", "tiles", 2, 2, 1),
    ("hevc", "tiles", 2, -1, 0),  # the most common vector a pixel off (0.894 before the best alignment)
    # objects faster than the flow searches over the encoder preset's two frames: measured over one frame where
    # that is fast (0.85-0.87 over two frames alone)
    ("hevc", "smooth", 0, 10, 1),
    ("hevc", "blocks", 3, 6, 0),
]


@pytest.mark.parametrize(("codec", "background", "pan", "speed", "seed"), CLIPS)
def test_the_moving_object_is_selected_on_any_background(tmp_path, codec, background, pan, speed, seed):
    clip = make_clip(
        "panning" if pan else "moving_object",
        num_frames=64,
        size=(224, 224),
        object_size=80,
        object_speed=speed,
        pan_speed=pan,
        seed=seed,
        background=background,
    )
    path = write_video(tmp_path / "clip.mp4", clip.frames, codec=codec, crf=18)
    selection = select_patches(path, mv_compensate="similarity", anchors="none")
    assert selection.motion_source == ("codec+estimate" if codec == "h264" else "estimate")  # I-frames estimated
    assert object_precision(selection, clip) >= 0.95


# Everyday footage (benchmarks/bench_selection_quality.py's second table, which gives every case): a camera
# moving over blurred noise, a flat or textured box, each encoder at its own default settings (x264: B-frames,
# b-pyramid, several references, so its vectors cannot be placed and motion is estimated). Before this family
# was added, these scored 0.09-0.87 (flat boxes) and 0.78-0.99 (textured). The last four, a flat box under a
# zoom or a diagonal pan, scored 0.86-0.93 with motion estimated from one frame to the next: there x265, VP9
# and AV1 hold background still for a frame and then move it a pixel or two at once (estimated over two
# frames, 0.97-1.00).
CAMERA_CLIPS = [
    ("libx264", ".mp4", 2, 8, True, "pan"),
    ("libx264", ".mp4", 6, 12, True, "diagonal"),
    ("libx264", ".mp4", 12, 24, True, "zoom"),
    ("libx264", ".mp4", 12, 24, False, "diagonal"),
    ("libx265", ".mp4", 2, 8, True, "pan"),
    ("libx265", ".mp4", 6, 12, False, "zoom"),
    ("libvpx-vp9", ".webm", 6, 12, True, "pan"),
    ("libvpx-vp9", ".webm", 12, 24, False, "zoom"),
    ("libsvtav1", ".mkv", 2, 8, True, "pan"),
    ("libsvtav1", ".mkv", 12, 24, False, "pan"),
    ("libvpx-vp9", ".webm", 12, 24, True, "zoom"),
    ("libx265", ".mp4", 6, 12, True, "zoom"),
    ("libsvtav1", ".mkv", 6, 12, True, "zoom"),
    ("libx265", ".mp4", 6, 12, True, "diagonal"),
]
CAMERA_MOTIONS = {
    "pan": dict(pan=(1.25, 0.0)),
    "diagonal": dict(pan=(0.5, 0.75), object_velocity=(-1.0, 0.5)),
    "zoom": dict(pan=(0.5, 0.0), zoom=0.004),
}


@pytest.mark.parametrize(("encoder", "suffix", "scale", "contrast", "flat", "camera"), CAMERA_CLIPS)
def test_the_moving_box_is_selected_when_the_camera_moves_over_soft_texture(
    tmp_path, encoder, suffix, scale, contrast, flat, camera
):
    clip = make_camera_clip(texture_scale=scale, contrast=contrast, flat_object=flat, **CAMERA_MOTIONS[camera])
    path = write_video_with_defaults(tmp_path / f"clip{suffix}", clip.frames, encoder)
    for precision in ("qpel", "pel"):
        selection = select_patches(path, preset="encoder", mv_precision=precision)
        assert selection.motion_source == "estimate" and selection.meta["estimate_baseline"] == 2
        assert object_precision(selection, clip, margin=1) >= 0.95, precision


# --- estimated motion over two frames ---------------------------------------------------------------


def estimated_patch_motion(luma, reference, reference_gap):
    """Per-patch motion (pixels a frame) and motion-only scores of 16-px patches of 64x64 planes."""
    geometry = plan_geometry((64, 64), "short_side_crop", 64, 16)
    config = SaliencyConfig(mv_compensate="median", mv_precision="qpel", fusion_weights=(1.0, 0.0))
    frame = score_frame(
        luma, reference, None, False, (64, 64), 0, geometry, config, "estimate", reference_gap=reference_gap
    )
    return frame.patch_motion, frame.patch_scores


def test_motion_estimated_over_two_frames_is_counted_per_frame():
    # A square moving 3 px a frame over a still background: against the frame two before it has moved 6 px,
    # 3 px a frame.
    background = texture(64, 64, seed=6)[..., 0]
    square = texture(32, 32, seed=7)[..., 1]
    frames = []
    for index in range(3):
        frame = background.copy()
        frame[16:48, 10 + 3 * index : 42 + 3 * index] = square  # frame 2: the four middle patches
        frames.append(frame)
    over_one, _ = estimated_patch_motion(frames[2], frames[1], 1)
    over_two, _ = estimated_patch_motion(frames[2], frames[0], 2)
    inside = (slice(1, 3), slice(1, 3))
    assert over_one[inside].min() > 2.5 and over_one[inside].max() < 3.5
    assert np.abs(over_two[inside] - over_one[inside]).max() < 0.25
    assert over_two[[0, 3]].max() < 0.25  # the still background above and below


def test_background_an_encoder_holds_back_and_then_moves_scores_only_over_one_frame():
    # The left quarter of the picture is 4 px off in frame 1 and back in frame 2 (an encoder's background moving
    # late and then all at once), while a square moves 2 px a frame. From frame to frame that background scores
    # as much as the square; over two frames it has not moved at all.
    world = texture(64, 96, seed=8)[..., 0]
    square = texture(16, 16, seed=9)[..., 1]
    frames = [world[:, 16:80].copy() for _ in range(3)]
    frames[1][:, :16] = world[:, 20:36]
    for index, frame in enumerate(frames):
        frame[16:32, 28 + 2 * index : 44 + 2 * index] = square  # frame 2: patch (1, 2)
    _, over_one = estimated_patch_motion(frames[2], frames[1], 1)
    _, over_two = estimated_patch_motion(frames[2], frames[0], 2)
    assert over_one[:, 0].min() > over_one[1, 2]
    assert over_two[:, 0].max() < 0.1 * over_two[1, 2]


# --- the check, on hand-made planes -----------------------------------------------------------------


def shifted(image, dx):
    """``image`` moved ``dx`` pixels to the left: a vector of +dx predicts it (``reference(x + v)``)."""
    matrix = np.float32([[1, 0, -dx], [0, 1, 0]])
    return cv2.warpAffine(image, matrix, image.shape[::-1], flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_WRAP)


def test_vectors_copied_across_a_flat_background_are_not_the_camera():
    reference = np.full((64, 64), 118, np.uint8)
    reference[24:40, 16:32] = texture(16, 16, seed=3)[..., 1]  # a textured square on a flat background
    luma = reference.copy()
    luma[24:40, 16:32] = reference[24:40, 18:34]  # the square moves 2 px left: its vector is +2 px
    field = np.zeros((16, 16, 2), np.int32)
    field[:10] = (8, 0)  # skip blocks copy its vector over most of the background (quarter-pel)
    field[6:10, 4:8] = (8, 0)
    checked, camera, prediction = check_against_camera(field, "median", luma, reference, (64, 64))
    assert np.abs(camera).max() == 0  # the flat cells count as still: the camera does not move
    assert (checked[6:10, 4:8] == (8, 0)).all()  # the square's vector predicts it: kept
    assert not checked[:6].any() and not checked[10:].any()  # the flat cells' vectors went to the camera
    assert np.array_equal(prediction, motion_compensated(reference, checked, (64, 64)))


def test_a_wrong_vector_on_a_periodic_texture_goes_to_the_camera():
    reference = block_texture(64, 96, seed=0, period=8)[..., 0]
    luma = shifted(reference, 2)  # the camera pans 2 px
    field = np.full((16, 24, 2), (8, 0), np.int32)
    field[4:8, 4:12] = (-24, 0)  # -6 px: one period off, predicts as well as +2 px
    checked, camera, prediction = check_against_camera(field, "similarity", luma, reference, (64, 96))
    assert np.allclose(camera, (8, 0), atol=0.05)
    assert (checked == (8, 0)).all()
    assert np.array_equal(prediction, motion_compensated(reference, checked, (64, 96)))


def test_an_object_moving_a_pixel_does_not_pull_the_fitted_camera():
    # A still camera (background vectors 0 or a quarter-pel of jitter) and an object covering a fifth of the
    # frame at 1 px: the fit must leave the object its whole pixel, or whole pixels of its motion against the
    # camera would truncate to nothing.
    field = np.zeros((56, 56, 2), np.int32)
    field[::3, ::2, 0] = 1
    field[20:45, 10:35] = (-4, 0)
    camera = fit_camera(field, "similarity")
    assert np.abs(camera).max() < 0.5, "the camera is pulled toward the object"


def replicated_shift(image, dx, dy):
    """``image`` sampled at ``(x + dx, y + dy)`` for whole ``dx, dy``, borders replicated (numpy indexing)."""
    height, width = image.shape
    rows = np.clip(np.arange(height) + dy, 0, height - 1)
    columns = np.clip(np.arange(width) + dx, 0, width - 1)
    return image[rows][:, columns]


# OpenCV's fixed-point bilinear interpolation samples at coordinates rounded to 1/32 pixel: off by at most
# 1/64, plus what OpenCV 4's warpAffine loses carrying its matrix in 1/1024 fixed point first and float32 maps
# lose in the sum x + d (about 1/1000 together at these sizes; 1/512 covers them). A coordinate off by e moves
# a bilinear value by at most e x the largest neighbour difference of its 2x2 cell along that axis. The
# weights, in 1/32768, are exact on the 1/32 grid, and the result is rounded to an integer: at most 0.5 more.
# OpenCV 5's float paths round less and stay within the same bound.
COORDINATE_ERROR = 1 / 64 + 1 / 512


def bilinear_within_rounding(image, dx, dy):
    """The exact float64 bilinear samples of ``image`` at ``(x + dx, y + dy)`` (borders replicated), and how
    far OpenCV's 8-bit bilinear interpolation may round each from it (see ``COORDINATE_ERROR``)."""
    x0, y0 = int(np.floor(dx)), int(np.floor(dy))
    fx, fy = dx - x0, dy - y0
    pixels = image.astype(np.float64)
    a, b = replicated_shift(pixels, x0, y0), replicated_shift(pixels, x0 + 1, y0)
    c, d = replicated_shift(pixels, x0, y0 + 1), replicated_shift(pixels, x0 + 1, y0 + 1)
    exact = (1 - fy) * ((1 - fx) * a + fx * b) + fy * ((1 - fx) * c + fx * d)
    across = np.maximum(np.abs(b - a), np.abs(d - c))
    down = np.maximum(np.abs(c - a), np.abs(d - b))
    return exact, 0.5 + COORDINATE_ERROR * (across + down)


def constant_field(vector_qpel, luma_hw):
    """One quarter-pel vector in every 4x4 cell of ``luma_hw``."""
    field = np.empty((*cell_grid(luma_hw), 2), np.int32)
    field[...] = vector_qpel
    return field


def test_a_whole_pixel_translation_is_compensated_exactly():
    reference = texture(90, 160, seed=1)[..., 0]
    # (full luma plane, quarter-pel vectors that are whole pixels of the 90x160 working plane)
    for luma_hw, vectors in (((90, 160), [(4, -8), (-12, 20), (0, 4)]), ((180, 320), [(8, -16), (-24, 8)])):
        for vector in vectors:
            scale = reference.shape[0] / luma_hw[0] / 4
            expected = replicated_shift(reference, round(vector[0] * scale), round(vector[1] * scale))
            assert np.array_equal(translated(reference, np.array(vector), luma_hw), expected), (luma_hw, vector)
            assert np.array_equal(motion_compensated(reference, constant_field(vector, luma_hw), luma_hw), expected)


def test_a_sub_pixel_translation_is_bilinear_within_fixed_point_rounding():
    reference = texture(90, 160, seed=1)[..., 0]
    # Quarter-pel vectors on a half-size plane (eighths of its pixels, on OpenCV's 1/32 grid), and on a plane
    # of 107/320 the width (off that grid: the coordinates themselves are rounded).
    luma_hw = (180, 320)
    for plane in (reference, np.ascontiguousarray(reference[:60, :107])):
        for vector in ((5, -3), (-7, 2), (13, 9), (2, 0)):
            dx = vector[0] * plane.shape[1] / luma_hw[1] / 4
            dy = vector[1] * plane.shape[0] / luma_hw[0] / 4
            exact, tolerance = bilinear_within_rounding(plane, dx, dy)
            for compensated in (
                translated(plane, np.array(vector), luma_hw),
                motion_compensated(plane, constant_field(vector, luma_hw), luma_hw),
            ):
                assert (np.abs(compensated - exact) <= tolerance).all(), (plane.shape, vector)


def test_the_check_predicts_a_sub_pixel_pan_by_its_bilinear_samples():
    # A 1.25 px pan coded everywhere: the camera's motion. The prediction mixes the warp of the camera's
    # translation and the remap of the coded field, both the bilinear samples up to rounding.
    reference = texture(64, 96, seed=4)[..., 1]
    exact, tolerance = bilinear_within_rounding(reference, 1.25, 0)
    luma = np.rint(exact).astype(np.uint8)
    checked, camera, prediction = check_against_camera(
        constant_field((5, 0), (64, 96)), "median", luma, reference, (64, 96)
    )
    assert (checked == (5, 0)).all() and np.array_equal(camera, (5, 0))
    assert (np.abs(prediction - exact) <= tolerance).all()


# --- precision ----------------------------------------------------------------------------------------


def test_whole_pixels_are_truncated_toward_zero():
    quarter_pel = np.array([7, -7, 3, -3, 4, -4, 0, 9, -9], np.int32)
    assert truncate_to_pixels(quarter_pel).tolist() == [4, -4, 0, 0, 4, -4, 0, 8, -8]


def test_presets_and_the_option():
    assert (SELECTION_PRESETS["lmm"].mv_precision, SELECTION_PRESETS["encoder"].mv_precision) == ("pel", "qpel")
    # The lmm preset estimates motion from each frame to the one before, as the release's vectors pointed.
    assert (SELECTION_PRESETS["lmm"].estimate_baseline, SELECTION_PRESETS["encoder"].estimate_baseline) == (1, 2)
    assert SelectionOptions.resolve(preset="lmm").mv_precision == "pel"
    assert SelectionOptions.resolve(preset="lmm", mv_precision="qpel").mv_precision == "qpel"
    assert SaliencyConfig().mv_precision == "pel"  # the release's
    with pytest.raises(OptionError, match="mv_precision must be one of pel, qpel; got 'half'"):
        select_patches("missing.mp4", mv_precision="half")  # refused before the file is looked at
    parser = argparse.ArgumentParser()
    add_selection_options(parser)
    assert selection_options(parser.parse_args(["--mv-precision", "pel"]))["mv_precision"] == "pel"
    assert "mv_precision" not in selection_options(parser.parse_args([]))  # the preset's


def vector_records(field_qpel):
    """``AVMotionVector`` side data for a field of 4x4 blocks (list 0, quarter-pel)."""
    rows, cols = field_qpel.shape[:2]
    names = ["source", "w", "h", "src_x", "src_y", "dst_x", "dst_y", "flags", "motion_x", "motion_y", "motion_scale"]
    types = ["i4", "u1", "u1", "i2", "i2", "i2", "i2", "u8", "i4", "i4", "u2"]
    records = np.zeros(rows * cols, dtype=list(zip(names, types, strict=True)))
    ys, xs = np.mgrid[0:rows, 0:cols]
    records["source"], records["w"], records["h"] = -1, 4, 4
    records["dst_x"], records["dst_y"] = xs.ravel() * 4 + 2, ys.ravel() * 4 + 2
    records["motion_x"], records["motion_y"] = field_qpel[..., 0].ravel(), field_qpel[..., 1].ravel()
    records["motion_scale"] = 4
    return records


def test_vector_coverage_marks_the_cells_a_past_vector_predicts():
    records = vector_records(np.zeros((4, 8, 2), np.int32))  # zero vectors on the left 32 columns of 64
    records["source"][:4] = 1  # the first row's first four blocks: a list-1 (future) reference only
    covered = vector_coverage(records, (16, 64))
    assert covered.shape == cell_grid((16, 64))
    expected = np.zeros((4, 16), np.uint8)
    expected[:, :8] = 1
    expected[0, :4] = 0
    assert np.array_equal(covered, expected)
    big = records[:1].copy()
    big["source"], big["w"], big["h"], big["dst_x"], big["dst_y"] = -1, 16, 16, 40, 8  # one 16x16 block
    assert np.array_equal(np.flatnonzero(vector_coverage(big, (16, 64)).any(axis=0)), np.arange(8, 12))


@pytest.mark.parametrize("without_vectors", ["difference", "zero"])
def test_the_residual_without_vectors_is_the_presets_choice(without_vectors):
    # Every pixel is 40 grey levels off its reference; only the left half of the frame has (zero) past vectors,
    # the right half is intra. "zero" (lmm) scores no residual there; "difference" (encoder) scores it.
    reference = texture(64, 64, seed=3)[..., 0]
    luma = np.clip(reference.astype(np.int16) + 40, 0, 255).astype(np.uint8)
    vectors = vector_records(np.zeros((16, 8, 2), np.int32))
    geometry = plan_geometry((64, 64), "short_side_crop", 64, 16)
    config = SaliencyConfig(
        mv_compensate="none", fusion_weights=(0.0, 1.0), check_vectors=False, residual_without_vectors=without_vectors
    )
    scores = score_frame(luma, reference, vectors, False, (64, 64), 0, geometry, config, "codec").patch_scores
    assert scores[:, :2].min() > 0.5 * 16 * 16
    if without_vectors == "zero":
        assert scores[:, 2:].max() == 0
    else:
        assert scores[:, 2:].min() > 0.5 * 16 * 16


@pytest.mark.parametrize("motion", ["codec", "estimate"])
def test_the_precision_applies_to_coded_and_estimated_motion(motion, monkeypatch):
    # The whole picture moves half a pixel: two quarter-pels, no whole pixel. Motion energy alone is scored,
    # of the vectors as they come (the check would give this faint motion to the still camera).
    monkeypatch.setattr(motion_module, "PREDICTION_TOLERANCE", None)
    reference = texture(224, 224, seed=5)[..., 1]
    luma = cv2.warpAffine(reference, np.float32([[1, 0, -0.5], [0, 1, 0]]), (224, 224), flags=cv2.INTER_LINEAR)
    vectors = vector_records(np.full((56, 56, 2), (2, 0), np.int32)) if motion == "codec" else None
    geometry = plan_geometry((224, 224), "short_side_crop", 224, 14)
    scores = {}
    for precision in ("qpel", "pel"):
        config = SaliencyConfig(mv_compensate="none", mv_precision=precision, fusion_weights=(1.0, 0.0))
        frame = score_frame(luma, reference, vectors, False, (224, 224), 0, geometry, config, motion)
        scores[precision] = frame.patch_scores[2:-2, 2:-2]
        assert frame.motion_source == motion
    # 0.5 px over the 1-pixel floor; estimated at 0.25-0.5 px (DIS measures it again from the whole-pixel shift
    # its first measurement rounds to, with the opposite sub-pixel bias)
    assert scores["qpel"].min() >= 0.25 * 14 * 14
    assert scores["pel"].max() == 0


def pel_scores(field, check_vectors):
    """Motion-only patch scores (16-px patches of a 64x64 frame) of a quarter-pel field taken as it comes."""
    reference = texture(64, 64, seed=2)[..., 0]
    geometry = plan_geometry((64, 64), "short_side_crop", 64, 16)
    config = SaliencyConfig(
        mv_compensate="median", mv_precision="pel", fusion_weights=(1.0, 0.0), check_vectors=check_vectors
    )
    frame = score_frame(reference, reference, vector_records(field), False, (64, 64), 0, geometry, config, "codec")
    return frame.patch_scores


def test_the_lmm_reading_takes_whole_pixels_before_the_camera_is_removed(monkeypatch):
    monkeypatch.setattr(motion_module, "PREDICTION_TOLERANCE", None)  # the vectors as they come
    # A 1.75 px pan (7 quarter-pels) and an object at 2.25 px (9): truncated first, the object keeps 1 px
    # over the camera's 1 px (the release's order); compensated first, its 0.5 px would truncate to 0.
    field = np.full((16, 16, 2), (7, 0), np.int32)
    field[4:8, 4:8] = (9, 0)
    scores = pel_scores(field, check_vectors=False)
    assert scores[1, 1] > 0 and scores[3, 3] == 0


def test_the_encoder_reading_takes_whole_pixels_of_the_motion_against_the_camera(monkeypatch):
    monkeypatch.setattr(motion_module, "PREDICTION_TOLERANCE", None)
    # A pan of a little under a pixel, coded 0.75 or 1 px from cell to cell (3 or 4 quarter-pels, 3 in most
    # cells), and an object at 2.25 px. Against the camera (0.75 px) the background moves 0 or 0.25 px and the
    # object 1.5 px: whole pixels keep the object only. Truncated first, the 1 px cells would move a pixel
    # against a still camera, as much as the object.
    field = np.full((16, 16, 2), (3, 0), np.int32)
    field[::2, ::3] = (4, 0)
    field[4:8, 4:8] = (9, 0)
    scores = pel_scores(field, check_vectors=True)
    assert scores[1, 1] > 0 and scores[0, 0] == scores[3, 3] == 0
    assert pel_scores(field, check_vectors=False)[0, 0] > 0  # the background's 1 px cells score


# --- the still-clip test --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "clip_options",
    [
        # Optical flow measures this 1 px/frame object at a little under a pixel: truncated to whole pixels,
        # that is 0 and the clip would read as still.
        dict(size=(224, 224), object_size=80, object_speed=1),
        # The flow of this small, fast object is rough: the check gives it to the (still) camera, and only
        # its residual scores it; the motion as estimated still says that the clip moves.
        dict(object_size=20),
    ],
    ids=["slow", "small"],
)
def test_the_still_clip_test_reads_quarter_pel_motion_as_estimated(tmp_path, clip_options):
    clip = make_clip("moving_object", num_frames=64, **clip_options)
    path = write_video(tmp_path / "clip.mp4", clip.frames, codec="hevc", crf=18)
    for precision in ("pel", "qpel"):
        selection = select_patches(path, mv_precision=precision)
        assert selection.meta["static_fallback"] is False, precision
        assert selection.meta["saliency"]["mv_precision"] == precision


# --- whose vectors can be placed --------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".mp4", ".ts"])  # the SPS in avcC, or in an Annex B byte stream
@pytest.mark.parametrize(
    ("x264_params", "references"),
    [("ref=1:bframes=0", 1), ("ref=2:bframes=0", 2), ("ref=5:bframes=0", 5)],
)
def test_the_reference_frames_an_h264_stream_declares_decide_whether_its_vectors_are_read(
    tmp_path, suffix, x264_params, references
):
    clip = make_clip("moving_object", num_frames=20, size=(96, 128), object_size=32)
    path = write_stream(tmp_path / f"clip{suffix}", clip.frames, "libx264", {"x264-params": x264_params})
    with VideoReader(path) as reader:
        assert reader.info.reference_frames == references
    selection = select_patches(path, num_frames=8, num_patches=256)
    # FFmpeg's vectors do not say which of several reference frames they point into: motion is estimated.
    assert selection.motion_source == ("codec" if references == 1 else "estimate")
    lmm = select_patches(path, preset="lmm", num_frames=8, num_patches=2000)
    assert lmm.motion_source == "codec"  # as coded, as the release's reader


def exp_golomb(value):
    """H.264 ue(v) bits of a non-negative integer."""
    code = bin(value + 1)[2:]
    return "0" * (len(code) - 1) + code


def signed_exp_golomb(value):
    return exp_golomb(2 * value - 1 if value > 0 else -2 * value)


def test_the_reference_frames_are_read_past_scaling_lists_and_picture_order_cycles():
    # A High-profile SPS written bit by bit (H.264 7.3.2.1.1): 4:2:0, a scaling matrix whose first list is sent
    # (sixteen deltas) and whose others are not, picture order type 1 with a two-entry cycle, 3 references.
    bits = "".join(
        [
            format(100, "08b") + "0" * 8 + format(40, "08b"),  # profile_idc High, constraint flags, level 4.0
            exp_golomb(0),  # seq_parameter_set_id
            exp_golomb(1) + exp_golomb(0) + exp_golomb(0) + "0",  # chroma 4:2:0, 8-bit, no bypass
            "1" + "1" + "".join(signed_exp_golomb(d) for d in [3, -2, 0, 5] * 4) + "0" * 7,  # the matrix
            exp_golomb(0),  # log2_max_frame_num_minus4
            exp_golomb(1) + "0" + signed_exp_golomb(-1) + signed_exp_golomb(2),  # picture order type 1
            exp_golomb(2) + signed_exp_golomb(4) + signed_exp_golomb(-3),  # its cycle
            exp_golomb(3),  # max_num_ref_frames
            "1",  # gaps_in_frame_num_allowed_flag, then the rest of the SPS
        ]
    )
    bits += "0" * (-len(bits) % 8)
    payload = int(bits, 2).to_bytes(len(bits) // 8, "big")
    sps = b"\x67" + payload
    avcc = bytes([1, 100, 0, 40, 0xFF, 0xE1]) + len(sps).to_bytes(2, "big") + sps
    assert h264_reference_frames(avcc) == 3
    assert h264_reference_frames(b"\x00\x00\x00\x01" + sps) == 3  # Annex B
    assert h264_reference_frames(avcc[:12]) is None  # cut short: unknown, not a guess
