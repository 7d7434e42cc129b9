"""Selection on awkward input: truncated Matroska/WebM, extreme aspect ratios, a frame size that changes
mid-stream, pipes, and options that cannot be used (refused before any video is opened)."""

import json
import math
import os
import subprocess
import sys

import av
import cv2
import numpy as np
import pytest
from conftest import cut_after, write_stream

from onevision_encoder.codec import CorruptVideoError, NotAVideoError, SelectionError, select_patches
from onevision_encoder.codec.frames import probe_video
from onevision_encoder.codec.geometry import MAX_RESIZED_SIDE, plan_geometry
from onevision_encoder.codec.options import OptionError, SelectionOptions
from onevision_encoder.codec.reader import VideoReader
from onevision_encoder.video.encode import write_video
from onevision_encoder.video.synthetic import make_clip, texture

FEW = dict(num_frames=8, num_patches=64, anchors="none")
ENCODERS = {"webm": ("libvpx-vp9", {"deadline": "realtime", "cpu-used": "8"}), "mkv": ("ffv1", {})}


def main(argv):
    """The ``onevision`` entry point, in this process (imported here: the CLI is not what most tests test)."""
    from onevision_encoder.cli.main import main as onevision

    return onevision(argv)


# --- truncated Matroska / WebM -------------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["webm", "mkv"])
def test_a_truncated_matroska_file_is_refused_unless_allowed(tmp_path, suffix):
    codec, options = ENCODERS[suffix]
    clip = make_clip("moving_object", num_frames=24, size=(112, 160), object_size=32)
    whole = write_stream(tmp_path / f"whole.{suffix}", clip.frames, codec, options)
    assert select_patches(whole, **FEW).frame_ids.max() == 23  # the complete file is fine
    cut = cut_after(whole, tmp_path / f"cut.{suffix}", 12)
    with pytest.raises(
        CorruptVideoError,
        match=rf"cut\.{suffix}: its packets \(12 video frames\) cover 0\.48 s but "
        r"the container declares 0\.96 s; the file is truncated \(allow_truncated=True",
    ):
        select_patches(cut, **FEW)
    info = probe_video(cut, allow_truncated=True)
    assert (info.num_frames, info.frame_count_from) == (12, "packets") and "declares 0.96 s" in info.truncated
    selection = select_patches(cut, allow_truncated=True, **FEW)
    assert selection.frame_ids.max() == 11
    assert selection.meta["video"]["truncated"] == info.truncated


def test_matroska_files_that_are_whole_are_not_called_truncated(tmp_path):
    clip = make_clip("moving_object", num_frames=24, size=(112, 160), object_size=32)
    codec, options = ENCODERS["webm"]
    whole = write_stream(tmp_path / "whole.webm", clip.frames, codec, options)
    # One frame missing is within rounding: "clearly short" means 10% and more than two frames.
    assert probe_video(cut_after(whole, tmp_path / "one.webm", 23)).truncated is None
    # Audio longer than the video: the container's duration is the audio's, the video is whole.
    path = tmp_path / "long_audio.mkv"
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=25)
        video.width, video.height, video.pix_fmt = 160, 112, "yuv420p"
        audio = container.add_stream("aac", rate=16000)
        audio.layout = "mono"
        for image in clip.frames:
            container.mux(video.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(video.encode())
        silence = np.zeros((1, 1024), np.float32)
        for index in range(2 * 16000 // 1024):  # 2 s of audio for 0.96 s of video
            frame = av.AudioFrame.from_ndarray(silence, format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, index * 1024
            container.mux(audio.encode(frame))
        container.mux(audio.encode())
    with av.open(str(path)) as container:
        assert container.duration / av.time_base > 1.9
    info = probe_video(path)
    assert (info.num_frames, info.truncated) == (24, None)


def test_allow_truncated_on_the_command_line(tmp_path, capsys):
    codec, options = ENCODERS["webm"]
    clip = make_clip("moving_object", num_frames=24, size=(112, 160), object_size=32)
    cut = cut_after(write_stream(tmp_path / "whole.webm", clip.frames, codec, options), tmp_path / "cut.webm", 12)
    flags = ["--frames", "8", "-k", "64", "--anchors", "none"]
    assert main(["select", str(cut), "--out", str(tmp_path / "refused"), *flags]) == 1
    assert "cut.webm: its packets (12 video frames) cover 0.48 s" in capsys.readouterr().err
    assert main(["select", str(cut), "--out", str(tmp_path / "sel"), "--allow-truncated", *flags]) == 0
    (written,) = (tmp_path / "sel").rglob("meta.json")  # named by its absolute path inside sel/
    meta = json.loads(written.read_text())
    assert meta["video"]["num_frames"] == 12 and "declares 0.96 s" in meta["video"]["truncated"]


# --- extreme aspect ratios -----------------------------------------------------------------------


@pytest.mark.parametrize("hw", [(2400, 16), (16, 2400)])
def test_an_extreme_aspect_ratio_is_refused_before_scoring(tmp_path, hw, monkeypatch):
    height, width = hw
    world = texture(height + 16, width + 16, 0)
    path = write_video(
        tmp_path / f"thin_{width}x{height}.mp4", [world[i : i + height, i : i + width] for i in range(8)]
    )
    import onevision_encoder.codec.select as select_module

    def never(*args, **kwargs):
        raise AssertionError("frames were scored")

    monkeypatch.setattr(select_module, "score_frames", never)
    with pytest.raises(
        SelectionError,
        match=rf"thin_{width}x{height}\.mp4: frames of {width}x{height} would be scored "
        r"at .*33600.*more than the 32766 pixels a side .* aspect ratios up to 146:1",
    ):
        select_patches(path, **FEW)
    monkeypatch.undo()
    # The padded geometry takes it: the long side goes to 576.
    selection = select_patches(path, preset="lmm", num_frames=4, num_patches=16, anchors="none")
    assert selection.grid == (4, 36, 36)


def test_the_aspect_limit_is_within_what_opencv_takes():
    assert max(plan_geometry((2000, 16), "short_side_crop", 224, 14).resized_hw) == 28000  # still scored
    with pytest.raises(ValueError, match="32766 pixels a side"):
        plan_geometry((16, 2400), "short_side_crop", 224, 14)
    # The largest side we plan for works (OpenCV 4.8-5.1 refuse one pixel more; a release that lifts that
    # limit breaks nothing of ours, so it is not asserted).
    plane = np.zeros((8, MAX_RESIZED_SIDE), np.uint8)
    zero = np.zeros(plane.shape, np.float32)
    cv2.remap(plane, zero, zero, cv2.INTER_LINEAR)


# --- a frame size that changes mid-stream ----------------------------------------------------------


@pytest.fixture(scope="module")
def size_change(tmp_path_factory):
    """The same 32 frames as one MPEG-TS stream that switches from 160x120 to 320x180 at frame 16 (two
    segments' bytes concatenated), and as a uniform 160x120 copy."""
    folder = tmp_path_factory.mktemp("size_change")
    clip = make_clip("moving_object", num_frames=32, size=(180, 320), object_size=48, object_speed=6)
    small = [cv2.resize(frame, (160, 120), interpolation=cv2.INTER_AREA) for frame in clip.frames]
    options = {"x264-params": "keyint=8:min-keyint=8:scenecut=0:bframes=0:ref=1", "crf": "18"}
    first = write_stream(folder / "a.ts", small[:16], "libx264", options, fmt="mpegts")
    second = write_stream(folder / "b.ts", list(clip.frames[16:]), "libx264", options, fmt="mpegts", first_pts=16)
    mixed = folder / "mixed.ts"
    mixed.write_bytes(first.read_bytes() + second.read_bytes())
    uniform = write_stream(folder / "uniform.ts", small, "libx264", options, fmt="mpegts")
    return mixed, uniform


def test_no_motion_is_measured_against_a_frame_of_another_size(size_change):
    mixed, _ = size_change
    with VideoReader(mixed) as reader:
        samples = {s.frame_index: s for s in reader.samples(np.arange(32))}
        assert reader.info.coded_hw == (120, 160)
    assert (samples[16].frame.width, samples[15].frame.width) == (320, 160)
    assert samples[16].reference is samples[15].frame  # the reference is rescaled with the frame...
    for index in range(1, 32):
        sample = samples[index]
        if sample.motion_vectors is not None:  # ...but no codec vector crosses the change
            assert (sample.reference.width, sample.reference.height) == (sample.frame.width, sample.frame.height)


def test_scores_after_a_size_change_match_a_uniform_copy(size_change):
    mixed, uniform = size_change
    options = dict(num_frames=32, num_patches=256, anchors="none")
    changing, steady = select_patches(mixed, **options), select_patches(uniform, **options)
    assert changing.frame_ids.tolist() == steady.frame_ids.tolist() == list(range(32))
    assert changing.meta["geometry"] == steady.meta["geometry"]  # every frame on the first frame's geometry

    def correlation(a, b):
        return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])

    assert correlation(changing.scores[1:16], steady.scores[1:16]) > 0.9
    # 0.96 (0.68 when the vectors of the 320x180 frames were read on the first frame's 160x120 grid).
    assert correlation(changing.scores[16:], steady.scores[16:]) > 0.9


# --- pipes and devices ----------------------------------------------------------------------------


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes on this system")
def test_a_pipe_is_refused_before_it_is_read(tmp_path, capsys):
    fifo = tmp_path / "stream.mp4"
    os.mkfifo(fifo)  # opening it for reading would block until a writer comes: it must not be opened
    with pytest.raises(NotAVideoError, match=r"stream\.mp4: is a pipe, not a file; .*seekable files \(save the stream"):
        select_patches(fifo)
    with pytest.raises(NotAVideoError, match=r"/dev/null: is a character device"):
        probe_video("/dev/null")
    assert main(["select", str(fifo), "--out", str(tmp_path / "out")]) == 1  # `cat x.mp4 | onevision select /dev/stdin`
    assert "stream.mp4: is a pipe" in capsys.readouterr().err


# --- options --------------------------------------------------------------------------------------

BAD_OPTIONS = [
    (dict(patch_size=0), "patch_size must be >= 1, got 0"),
    (dict(size=0), "size must be >= 1, got 0"),
    (dict(size=-224), "size must be >= 1, got -224"),
    (dict(size=100), "size must be a multiple of patch_size=14, got 100"),
    (dict(num_frames=0), "num_frames must be >= 1, got 0"),
    (dict(num_frames=16.0), "num_frames must be an integer, got 16.0"),
    (dict(num_patches=0), "num_patches must be >= 1, got 0"),
    (dict(num_patches=2048.7), "num_patches must be an integer, got 2048.7"),
    (dict(num_patches=True), "num_patches must be an integer, got True"),
    (dict(num_patches="2048"), "num_patches must be an integer, got '2048'"),
    (dict(centre_prior=math.nan), "centre_prior must be a finite number, got nan"),
    (dict(centre_prior=-0.3), "centre_prior must be >= 0, got -0.3"),
    (dict(fusion_weights=(math.nan, 1)), "fusion_weights must be a finite number, got nan"),
    (dict(fusion_weights=(1.0,)), r"fusion_weights must be two numbers \(motion, residual\)"),
    (dict(fusion_weights=(0, 0)), "fusion_weights must not both be 0"),
    (dict(fusion_weights=(-1, 2)), "fusion_weights must be >= 0, got -1"),
    (dict(static_threshold=math.inf), "static_threshold must be a finite number, got inf"),
    (dict(gop_size=0), "gop_size must be >= 1, got 0"),
    (dict(mv_compensate="homography"), "mv_compensate must be one of none, median, mean, similarity, affine"),
    (dict(anchors="all"), "anchors must be one of gop, first, none; got 'all'"),
    (dict(motion="psychic"), "motion must be one of auto, codec, estimate"),
    (dict(fusion="product"), "fusion must be one of weighted, max, sum, geomean"),
    (dict(residual="squared"), "residual must be one of abs, gradient"),
    (dict(preset="tiny"), "preset must be one of encoder, lmm"),
    (dict(frame_range=(5, 5)), "frame_range must end after it starts, got 5:5"),
    (dict(frame_range=(-1, 10)), "frame_range must be >= 0, got -1"),
    (dict(frame_range="0:10"), r"frame_range must be \(start, end\) frame indices"),
    (dict(keep_frames="yes"), "keep_frames must be True or False"),
    (dict(allow_truncated=1), "allow_truncated must be True or False"),
    (dict(num_patches=20000), "num_patches must be at most the 16384 patches of 64 frames of 16x16"),
    (dict(gop_size=1), r"num_patches must hold the whole frames that anchors='gop' keeps \(16384 patches\)"),
]


@pytest.mark.parametrize(("options", "message"), BAD_OPTIONS, ids=[str(o) for o, _ in BAD_OPTIONS])
def test_bad_options_are_refused_before_the_video_is_opened(tmp_path, options, message):
    with pytest.raises(OptionError, match=message) as raised:  # not VideoNotFoundError: the file is not looked at
        select_patches(tmp_path / "missing.mp4", **options)
    assert raised.value.option in message and isinstance(raised.value, ValueError)


def test_numpy_integers_and_floats_are_options_too(tmp_path):
    options = SelectionOptions.resolve(
        num_patches=np.int64(128), num_frames=np.int32(16), centre_prior=np.float32(0.5), anchors="none"
    )
    assert (options.num_patches, options.num_frames, options.centre_prior) == (128, 16, 0.5)
    assert type(options.num_patches) is int
    path = write_video(tmp_path / "clip.mp4", make_clip("moving_object", num_frames=16, size=(112, 160)).frames)
    selection = select_patches(path, num_patches=np.int64(64), num_frames=np.int64(8), anchors="none")
    assert selection.num_patches == 64 and json.dumps(selection.meta)  # plain ints in meta.json


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["-k", "0"], "argument -k/--num-patches: must be >= 1, got 0"),
        (["--frames", "0"], "argument --frames: must be >= 1, got 0"),
        (["--patch-size", "0"], "argument --patch-size: must be >= 1, got 0"),
        (["--size", "0"], "argument --size: must be >= 1, got 0"),
        (["--size", "100"], "argument --size: must be a multiple of patch_size=14, got 100"),
        (["--gop-size", "0"], "argument --gop-size: must be >= 1, got 0"),
        (["--frame-range", "9:3"], "argument --frame-range: must end after it starts, got 9:3"),
        (["-k", "20000"], "argument -k/--num-patches: must be at most the 16384 patches"),
    ],
)
def test_bad_selection_options_are_usage_errors(tmp_path, capsys, flags, message):
    video = tmp_path / "missing.mp4"  # never opened: a per-file failure would exit 1
    assert main(["select", str(video), "--out", str(tmp_path / "out"), *flags]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_the_options_import_no_codec_library():
    code = (
        "import sys, onevision_encoder.codec.options; print(sorted({'torch', 'cv2', 'av', 'numpy'} & set(sys.modules)))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
