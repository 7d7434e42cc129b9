"""Decoding only what the sampled frames need: seek points from the bitstream, frames placed by timestamp,
non-reference B frames left out, and every result bitwise that of a decode from the first frame."""

import functools
import json

import av
import numpy as np
import pytest
from av.video.frame import PictureType
from conftest import write_stream

from onevision_encoder.codec import reader as reader_module
from onevision_encoder.codec import select as select_module
from onevision_encoder.codec import select_patches
from onevision_encoder.codec.bitstream import is_disposable, is_random_access, nal_length_size
from onevision_encoder.codec.frames import sample_frame_ids
from onevision_encoder.codec.reader import VideoReader
from onevision_encoder.codec.seeking import FrameIndex, may_seek
from onevision_encoder.video.synthetic import make_clip, texture

FRAMES, GOP = 180, 30
X264_B = "keyint=30:min-keyint=30:scenecut=0:bframes=3:b-pyramid=normal"
STREAMS = {  # file name -> (encoder, options, container format or None for the suffix's)
    "h264-closed.mp4": ("libx264", {"x264-params": X264_B}, None),
    "h264-open.mp4": ("libx264", {"x264-params": X264_B + ":open-gop=1"}, None),
    "h264-open.mkv": ("libx264", {"x264-params": X264_B + ":open-gop=1"}, None),
    "h264-open.ts": ("libx264", {"x264-params": X264_B + ":open-gop=1"}, "mpegts"),
    "hevc-cra.mp4": ("libx265", {"x265-params": "keyint=30:min-keyint=30:scenecut=0:bframes=4:log-level=error"}, None),
    "vp9.webm": ("libvpx-vp9", {"g": "30", "deadline": "realtime", "cpu-used": "8"}, None),
    "vp8.webm": ("libvpx", {"g": "30", "deadline": "realtime", "cpu-used": "8"}, None),
    "av1.mp4": ("libsvtav1", {"g": "30", "preset": "12", "svtav1-params": "scd=0"}, None),
    "av1.mkv": ("libsvtav1", {"g": "30", "preset": "12", "svtav1-params": "scd=0"}, None),
    "mpeg2.mp4": ("mpeg2video", {"g": "30", "bf": "2"}, None),
    "mpeg2.ts": ("mpeg2video", {"g": "30", "bf": "2"}, "mpegts"),
    "mpeg4.mp4": ("mpeg4", {"g": "30", "bf": "2"}, None),
    "mpeg4.mkv": ("mpeg4", {"g": "30", "bf": "2"}, None),
    # AVI declares its frame count, so no counting pass runs (its timestamps follow decoding order: no B-frames).
    "h264.avi": ("libx264", {"x264-params": "keyint=30:min-keyint=30:scenecut=0:bframes=0"}, None),
}
SEEKABLE = [*STREAMS]


@pytest.fixture(scope="session")
def streams(tmp_path_factory):
    folder = tmp_path_factory.mktemp("seek")
    frames = make_clip("panning", num_frames=FRAMES, size=(96, 128), object_size=24, pan_speed=1.0).frames
    made = {name: write_stream(folder / name, frames, *spec) for name, spec in STREAMS.items()}
    made["h264-non-idr.nut"] = non_idr_key_frames(folder)
    return made


def non_idr_key_frames(folder):
    """H.264 whose scene cuts are non-IDR I frames (the scenes alternate, so later P frames predict from
    pictures before those I frames), remuxed into NUT with every I frame flagged a key frame."""
    scenes = [texture(96, 128, seed) for seed in (1, 2)]
    frames = [np.roll(scenes[(i // 5) % 2], i, axis=1) for i in range(120)]
    options = {"x264-params": "keyint=1000:min-keyint=1000:scenecut=40:ref=16:bframes=0"}
    source = write_stream(folder / "non-idr.mp4", frames, "libx264", options)
    with av.open(str(source)) as container:
        types = [PictureType(frame.pict_type).name for frame in container.decode(video=0)]
    assert types.count("I") > 3
    target = folder / "h264-non-idr.nut"
    with av.open(str(source)) as src, av.open(str(target), "w") as dst:
        stream = dst.add_stream_from_template(src.streams.video[0])
        for packet, kind in zip((p for p in src.demux(video=0) if p.size), types, strict=True):
            packet.stream = stream
            packet.is_keyframe = kind == "I"
            dst.mux(packet)
    return target


def unseeking(monkeypatch):
    """select_patches as before seeking existed: every frame decoded from the first."""
    monkeypatch.setattr(select_module, "VideoReader", functools.partial(VideoReader, seek=False))


def fingerprint(sample):
    """Everything the scoring reads from a sample, as comparable values."""

    def plane(frame):  # every plane of the decoded picture, chroma included
        return None if frame is None else frame.to_ndarray().tobytes()

    vectors = sample.motion_vectors
    fields = None if vectors is None else tuple(vectors[name].tobytes() for name in vectors.dtype.names)
    references = plane(sample.reference), sample.reference_gap, plane(sample.previous)
    return sample.frame_index, plane(sample.frame), references, fields, sample.is_intra


def read(path, ids, seek=True, baseline=1, vectors=True):
    with VideoReader(path, seek=seek) as reader:
        samples = reader.samples(ids, baseline, vectors)
        return [fingerprint(sample) for sample in samples], reader.stats, reader._index


PLANS = {
    "tail clip": lambda n: sample_frame_ids(n, 8, (n - 40, n)),
    "sparse": lambda n: np.array([3, 29, 30, 31, n // 2 + 5, n - 30, n - 1]),  # 29: an open GOP's leading frame
    "every 4th": lambda n: np.arange(0, n, 4),
}


# --- which key frames may start a decode ---------------------------------------------------------


@pytest.mark.parametrize("name", SEEKABLE)
def test_every_key_frame_of_these_streams_is_a_seek_point(streams, name):
    with av.open(str(streams[name])) as container:
        packets = [packet for packet in container.demux(video=0) if packet.size]
    shown = sorted(packet.pts for packet in packets)
    keys = sorted(shown.index(packet.pts) for packet in packets if packet.is_keyframe)
    assert set(range(0, FRAMES, GOP)) <= set(keys)  # mpeg2video also ends on an I picture
    with VideoReader(streams[name]) as reader:
        next(reader.samples([FRAMES - 1]))  # the index may wait for frames a seek could skip to
        assert reader._index is not None and reader.info.num_frames == FRAMES
        assert reader._index.seek_points.tolist() == keys


def test_non_idr_i_frames_flagged_as_key_frames_are_not_seek_points(streams):
    path = streams["h264-non-idr.nut"]
    with av.open(str(path)) as container:
        keys = [packet.pts for packet in container.demux(video=0) if packet.size and packet.is_keyframe]
    assert len(keys) > 3
    with VideoReader(path) as reader:
        assert reader._index.seek_points.tolist() == [0]
    # A naive seek to such a frame gives nothing (FFmpeg 8 holds back what it cannot trust, here to the end of
    # the stream) or frames predicted from the wrong pictures. Our reader decodes from frame 0.
    with av.open(str(path)) as container:
        full = {frame.pts: frame.to_ndarray().tobytes() for frame in container.decode(video=0)}
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        container.seek(keys[1], stream=stream)
        naive = {frame.pts: frame.to_ndarray().tobytes() for frame in container.decode(stream)}
    after_key = [pts for pts in full if pts >= keys[1]]
    assert len(naive) < len(after_key) or any(full[pts] != naive[pts] for pts in naive)
    ours, stats, _ = read(path, [10, 60, 119])
    assert ours == read(path, [10, 60, 119], seek=False)[0] and stats.seeks == 0


def test_random_access_and_disposable_packets_from_their_headers():
    sei = bytes([0x06, 0x06, 0x01, 0b11000100, 0x80])  # recovery point: cnt 0, exact match, no broken link
    inexact = bytes([0x06, 0x06, 0x01, 0b10000100, 0x80])  # exact_match_flag 0
    i_slice = bytes([0x61, 0b10001000, 0x00, 0x03, 0x01])  # ref_idc 3, first_mb 0, slice_type 7 (I)
    p_slice = bytes([0x61, 0b10011000])  # slice_type 5 (P)
    b_nonref = bytes([0x01, 0b10011100])  # ref_idc 0, slice_type 6 (B)
    b_ref = bytes([0x21, 0b10011100])  # ref_idc 1
    idr = bytes([0x65, 0b10001000])

    def annex_b(*units):  # 4- and 3-byte start codes
        return b"".join((b"\x00\x00\x00\x01" if i % 2 == 0 else b"\x00\x00\x01") + u for i, u in enumerate(units))

    def avcc(*units):
        return b"".join(len(u).to_bytes(4, "big") + u for u in units)

    for pack, size in ((annex_b, None), (avcc, 4)):
        assert is_random_access("h264", pack(idr), size)
        assert is_random_access("h264", pack(sei, i_slice, i_slice), size)
        assert not is_random_access("h264", pack(i_slice), size)  # a non-IDR I frame without recovery point
        assert not is_random_access("h264", pack(inexact, i_slice), size)
        assert not is_random_access("h264", pack(sei, p_slice), size)
        assert is_disposable("h264", pack(b_nonref, b_nonref), size)
        assert not is_disposable("h264", pack(b_nonref, b_ref), size)
        assert not is_disposable("h264", pack(p_slice), size)
    assert not is_random_access("h264", avcc(idr)[:-1], 4)  # cut short: not trusted
    assert not is_random_access("h263", b"\x00\x00\x80\x02", None)  # codecs not checked never seek
    assert nal_length_size("h264", bytes([1, 100, 0, 31, 0xFF])) == 4 and nal_length_size("h264", b"\0\0\0\1") is None


def test_random_access_of_vp8_av1_mpeg2_and_mpeg4_from_their_headers():
    vp8_key = bytes([0x50, 0x4C, 0x00, 0x9D, 0x01, 0x2A])  # frame type 0 (key), show_frame 1, start code
    assert is_random_access("vp8", vp8_key, None)
    assert not is_random_access("vp8", bytes([0x40, *vp8_key[1:]]), None)  # a hidden key frame
    assert not is_random_access("vp8", bytes([0xF1, 0x06, 0x00, 0x0B, 0x10, 0xAC]), None)  # an inter frame

    def obu(kind, payload):  # with obu_has_size_field
        return bytes([kind << 3 | 0x2, len(payload)]) + payload

    sequence = obu(1, bytes([0x00, 0x00, 0x00]))  # seq_profile 0, still_picture 0, reduced_still_picture_header 0
    shown_key = obu(6, bytes([0b0001_0000]))  # show_existing_frame 0, frame_type 0 (KEY_FRAME), show_frame 1
    assert is_random_access("av1", obu(2, b"") + sequence + shown_key, None)  # temporal delimiter first
    assert not is_random_access("av1", shown_key, None)  # no sequence header in the temporal unit
    assert not is_random_access("av1", sequence + obu(6, bytes([0b0000_0000])), None)  # a hidden key frame
    assert not is_random_access("av1", sequence + obu(3, bytes([0b0101_0000])), None)  # an intra-only frame
    assert not is_random_access("av1", sequence + obu(6, bytes([0b1000_0000])), None)  # show_existing_frame
    assert not is_random_access("av1", sequence + bytes([6 << 3 | 0x2, 0x85]), None)  # a size past the end

    def start_codes(*units):
        return b"".join(b"\x00\x00\x01" + unit for unit in units)

    sequence_header, i_picture, p_picture = (
        bytes([0xB3, 0x08, 0x00]),
        bytes([0x00, 0x00, 0x0F]),
        bytes([0x00, 0x00, 0xD7]),
    )
    slice_ = bytes([0x01, 0x22])
    assert is_random_access("mpeg2video", start_codes(sequence_header, bytes([0xB8, 0x01]), i_picture, slice_), None)
    assert not is_random_access("mpeg2video", start_codes(i_picture, slice_), None)  # no sequence header
    assert not is_random_access("mpeg2video", start_codes(sequence_header, p_picture, slice_), None)
    assert not is_random_access("mpeg2video", start_codes(sequence_header, i_picture, slice_, p_picture), None)
    i_vop, p_vop = bytes([0xB6, 0x10]), bytes([0xB6, 0x51])  # vop_coding_type 0 (I), 1 (P)
    assert is_random_access("mpeg4", start_codes(bytes([0xB3, 0x00, 0x10]), i_vop), None)
    assert not is_random_access("mpeg4", start_codes(p_vop), None)
    assert not is_random_access("mpeg4", start_codes(i_vop, p_vop), None)  # a packed bitstream


def test_runs_seek_only_when_that_skips_frames():
    index = FrameIndex.build(list(range(100)), list(range(100)), [True] * 100, [i % 10 == 0 for i in range(100)])
    assert index.seek_points.tolist() == list(range(0, 100, 10))
    assert index.runs([5, 30, 31, 95], min_skipped=8) == [(0, [5]), (20, [30, 31]), (90, [95])]
    assert index.runs([5, 12, 25], min_skipped=8) == [(0, [5, 12, 25])]
    assert index.runs([0, 10, 20, 30], min_skipped=8) == [(0, [0, 10, 20, 30])]  # a key frame needs the one before
    # Motion estimated two frames back: a frame just after a seek point needs the one before that point too.
    assert index.runs([21, 95], min_skipped=8) == [(20, [21]), (90, [95])]
    assert index.runs([21, 95], min_skipped=8, reach=2) == [(10, [21]), (90, [95])]
    assert may_seek([9], 8) and not may_seek([9], 8, reach=2) and may_seek([10], 8, reach=2)
    # Repeated or missing timestamps: frames can only be counted.
    assert FrameIndex.build([0, 1, 1], [0, 1, 2], [True] * 3, [True] * 3) is None
    assert FrameIndex.build([0, None], [0, 1], [True] * 2, [True] * 2) is None
    # A key frame shown after a packet decoded before it is not a seek point.
    late = FrameIndex.build([0, 5, 2, 3], [0, 1, 2, 3], [True] * 4, [True, False, True, False])
    assert late.seek_points.tolist() == [0]


# --- bitwise the full decode ---------------------------------------------------------------------


# How a selection reads: vectors where the stream has them and frames without estimated against the frame
# before, or (the encoder preset's estimated motion) every frame estimated against the frame two before.
READINGS = {"vectors": (1, True), "estimated over two frames": (2, False)}


@pytest.mark.parametrize("reading", READINGS)
@pytest.mark.parametrize("plan", PLANS)
@pytest.mark.parametrize("name", [*SEEKABLE, "h264-non-idr.nut"])
def test_samples_are_bitwise_those_of_a_full_decode(streams, name, plan, reading):
    path = streams[name]
    ids = PLANS[plan](FRAMES if name != "h264-non-idr.nut" else 120)
    baseline, vectors = READINGS[reading]
    ours, stats, _ = read(path, ids, baseline=baseline, vectors=vectors)
    full, full_stats, _ = read(path, ids, seek=False, baseline=baseline, vectors=vectors)
    assert ours == full
    assert stats.restarts == 0
    if plan != "every 4th" and name in SEEKABLE:
        assert stats.seeks > 0 and stats.frames < full_stats.frames


def test_motion_estimated_over_two_frames_reads_the_frames_two_and_one_before(streams):
    with av.open(str(streams["hevc-cra.mp4"])) as container:
        pictures = [frame.to_ndarray().tobytes() for frame in container.decode(video=0)]
    ids = np.array([1, 2, 20, 21, FRAMES - 1])
    samples, _, _ = read(streams["hevc-cra.mp4"], ids, baseline=2, vectors=False)
    for index, (sample, (_, frame, (reference, gap, previous), _, _)) in enumerate(zip(ids, samples, strict=True)):
        assert frame == pictures[sample], index
        if sample == 1:  # the video's start: the one frame there is
            assert (reference, gap, previous) == (pictures[0], 1, None)
        else:
            assert (reference, gap, previous) == (pictures[sample - 2], 2, pictures[sample - 1]), index


@pytest.mark.parametrize(
    "name", ["h264-open.mp4", "hevc-cra.mp4", "vp9.webm", "vp8.webm", "av1.mkv", "mpeg2.ts", "mpeg4.mp4"]
)
def test_selection_of_a_clip_is_bitwise_the_full_decodes(streams, name, monkeypatch):
    options = dict(num_frames=8, num_patches=96, anchors="none", frame_range=(FRAMES - 45, FRAMES - 2))
    ours = select_patches(streams[name], **options)
    unseeking(monkeypatch)
    full = select_patches(streams[name], **options)
    assert np.array_equal(ours.scores, full.scores) and np.array_equal(ours.visible_indices, full.visible_indices)
    assert ours.meta["motion_sources"] == full.meta["motion_sources"]


def test_non_reference_b_frames_nobody_needs_are_not_decoded(sample_video, monkeypatch):
    path = sample_video("bikes.mp4")  # x264 with B-pyramids: 115 of its 250 frames are non-reference B frames
    ids = sample_frame_ids(250, 16)
    ours, stats, _ = read(path, ids)
    assert ours == read(path, ids, seek=False)[0]
    assert stats.skipped > 40 and stats.restarts == 0
    selection = select_patches(path, num_frames=16, num_patches=512)
    unseeking(monkeypatch)
    full = select_patches(path, num_frames=16, num_patches=512)
    assert np.array_equal(selection.scores, full.scores)


def test_an_edit_list_with_b_frames_keeps_frame_indices_exact(streams, tmp_path):
    """Packets hidden by an MP4 edit list are not frames: indices are ranks among the presented timestamps."""
    source = streams["h264-closed.mp4"]
    target = tmp_path / "trimmed.mp4"
    with av.open(str(source)) as src, av.open(str(target), "w") as dst:
        stream = dst.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(src.streams.video[0]):
            if packet.dts is not None:
                packet.pts -= 12 * packet.duration  # 12 frames before time 0: hidden, the decode starts mid-GOP
                packet.dts -= 12 * packet.duration
                packet.stream = stream
                dst.mux(packet)
    with VideoReader(target) as reader:
        assert reader.info.num_frames == FRAMES - 12 and reader._index.seek_points.tolist() == [18, 48, 78, 108, 138]
    ids = np.array([0, 1, 40, 90, 130, FRAMES - 13])
    ours, stats, _ = read(target, ids)
    assert ours == read(target, ids, seek=False)[0] and stats.seeks > 0
    # And they are the frames of the untrimmed file, 12 further on.
    assert [f[1] for f in ours] == [f[1] for f in read(source, ids + 12, seek=False)[0]]


def test_a_surprise_falls_back_to_decoding_from_the_first_frame(streams):
    path = streams["h264-open.mp4"]
    ids = np.array([5, 100, 170])
    with VideoReader(path) as reader:
        index = reader._index
        shifted = index.pts.copy()
        shifted[150:] += 1  # the decoder's frames will not carry the timestamps the index expects
        reader._index = FrameIndex(shifted, index.seek_points, index.seek_dts, index.packet_pts)
        ours = [fingerprint(sample) for sample in reader.samples(ids)]
        assert reader.stats.restarts == 1
    assert ours == read(path, ids, seek=False)[0]


def test_cost_follows_the_sampled_frames(streams):
    """The last 40 frames of the clip decode about 40 frames plus one GOP, not the whole clip."""
    path = streams["h264-closed.mp4"]
    _, stats, _ = read(path, sample_frame_ids(FRAMES, 8, (FRAMES - 40, FRAMES)))
    assert stats.frames <= 40 + GOP + 4


@pytest.mark.parametrize("plan", PLANS)
def test_the_packet_scan_runs_only_when_a_seek_could_skip_frames(streams, plan, monkeypatch):
    """AVI declares its frame count, so no counting pass runs: frames are indexed only for a plan with gaps a
    seek could skip (every 4th frame has none), and the frames are those of a full decode either way."""
    path, ids = streams["h264.avi"], PLANS[plan](FRAMES)
    scans = []
    scan = reader_module.count_packets
    monkeypatch.setattr(
        reader_module, "count_packets", lambda *args, **kwargs: scans.append(1) or scan(*args, **kwargs)
    )
    ours, stats, index = read(path, ids)
    expected = 0 if plan == "every 4th" else 1
    assert len(scans) == expected and stats.scans == expected
    assert (index is not None) == bool(expected) and (stats.seeks > 0) == bool(expected)
    assert ours == read(path, ids, seek=False)[0]
    assert len(scans) == expected  # seek=False never scans a file that declares its frame count


def test_decode_statistics_go_into_meta_json(streams, tmp_path, monkeypatch):
    options = dict(num_frames=8, num_patches=96, anchors="none", frame_range=(FRAMES - 45, FRAMES - 2))
    selection = select_patches(streams["av1.mkv"], **options)
    meta = json.loads((selection.save(tmp_path / "selection") / "meta.json").read_text())
    decode = meta["decode"]
    assert "made_by" in meta and set(decode) >= {"frames", "seeks", "skipped", "restarts", "scans", "seconds"}
    assert decode["seeks"] > 0 and decode["restarts"] == 0 and decode["scans"] == 1 and decode["seconds"] > 0
    assert decode["motion_sources"] == {"estimate": 8} and meta["estimate_baseline"] == 2  # AV1 exports no vectors
    unseeking(monkeypatch)
    full = select_patches(streams["av1.mkv"], **options).meta["decode"]
    assert full["seeks"] == 0 and full["frames"] > decode["frames"] >= 8
