"""The LLaVA-OneVision-2 codec frontend: a drop-in for lmms-video-utils' ``fetch_codec_video`` and
``process_video_info``, checked against the real package (a dev dependency) on the same clips and configurations."""

import numpy as np
import pytest
import torch

from onevision_encoder.codec import CodecConfig, OptionError, SelectionError, fetch_codec_video, process_video_info
from onevision_encoder.codec.codec_video import bitcost_groups
from onevision_encoder.video.encode import write_video
from onevision_encoder.video.synthetic import make_clip

reference = pytest.importorskip("lmms_video_utils", reason="lmms-video-utils (make installs it) is the reference")


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("codec-video")
    wide = make_clip("panning", num_frames=150, size=(180, 320), object_size=40, object_speed=2)
    tall = make_clip("moving_object", num_frames=70, size=(320, 192), object_size=48)
    return {
        "wide": (write_video(folder / "wide.mp4", wide.frames), wide),
        "tall": (write_video(folder / "tall.mp4", tall.frames, codec="hevc"), tall),
    }


CONFIGS = [
    ("wide", {}),
    ("wide", {"max_pixels": 40_000, "target_canvas": 16, "group_size": 16}),
    ("wide", {"start_time": 1.0, "end_time": 5.0, "images_per_group": 2, "target_canvas": 8, "group_size": 8}),
    ("wide", {"target_fps": 10.0, "max_frames": 48, "patch": 16}),
    ("tall", {"max_pixels": 60_000, "block": 1}),
    ("tall", {}),  # the reference sizes its canvases twice by the same rule: 19 x 10 blocks here, not 18 x 10
]


@pytest.mark.filterwarnings("ignore::UserWarning")  # the reference warns when it samples every frame
@pytest.mark.parametrize(("name", "config"), CONFIGS)
def test_the_output_has_the_references_fields_layout_and_geometry(clips, name, config):
    path, _ = clips[name]
    ours = fetch_codec_video(path, **config)
    theirs = reference.fetch_codec_video(str(path), **config, device="cpu")
    for field in ("canvases", "patch_positions", "gop_ids", "source_pts"):
        mine, its = getattr(ours, field), getattr(theirs, field)
        assert isinstance(mine, torch.Tensor) and mine.dtype == its.dtype and mine.shape == its.shape, field
    assert (ours.fps, ours.n_groups) == (theirs.fps, theirs.n_groups)
    # What lmms-engine's llava_onevision2 processor checks of a codec output (its processor itself loads the
    # checkpoint's code from the hub): these attributes, and one position per canvas patch.
    assert all(hasattr(ours, name) for name in ("canvases", "patch_positions", "source_pts", "fps"))
    assert torch.equal(ours.gop_ids, theirs.gop_ids)
    assert torch.allclose(ours.source_pts, theirs.source_pts, atol=1e-3)
    settings = CodecConfig(**config)
    count, _, height, width = ours.canvases.shape
    rows, cols = height // settings.patch, width // settings.patch
    positions = ours.patch_positions.view(count, rows, cols, 3)
    reference_positions = theirs.patch_positions.view(count, rows, cols, 3)
    per_group = settings.images_per_group
    for canvas in range(count):
        if canvas % per_group == 0:  # a group's first frame, whole: the same frame, the same raster of patches
            assert torch.equal(positions[canvas], reference_positions[canvas])
            difference = (ours.canvases[canvas].float() - theirs.canvases[canvas].float()).abs().mean()
            assert difference < 6, "the same picture, up to the resize filter"
            continue
        used = positions[canvas, ..., 0] >= 0
        assert used.any()
        # Every used slot names a frame of its own group (after the group's first) and a patch of the frame,
        # in whole blocks; the empty slots are -1 and black.
        group_frames = reference_positions[canvas - canvas % per_group, 0, 0, 0].item()
        assert (positions[canvas, ..., 0][used] > group_frames).all()
        assert (positions[canvas, ..., 1][used] < rows).all() and (positions[canvas, ..., 2][used] < cols).all()
        assert (positions[canvas][~used] == -1).all()
        block = settings.block
        tiles = positions[canvas].view(rows // block, block, cols // block, block, 3)
        assert (tiles[..., 0] == tiles[:, :1, :, :1, 0]).all(), "one source frame per block"


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_blocks_are_taken_where_the_clip_moves(clips):
    path, clip = clips["wide"]
    ours = fetch_codec_video(path, max_pixels=40_000)
    settings = CodecConfig(max_pixels=40_000)
    count, _, height, width = ours.canvases.shape
    positions = ours.patch_positions.view(count, height // 14, width // 14, 3)
    scale = height / clip.frames.shape[1]
    hits = total = 0
    for canvas in range(count):
        if canvas % settings.images_per_group == 0:
            continue
        for frame, row, col in positions[canvas].reshape(-1, 3).tolist():
            if frame < 0:
                continue
            top, left, bottom, right = (v * scale for v in clip.boxes[frame])
            total += 1
            hits += row * 14 < bottom + 14 and (row + 1) * 14 > top - 14 and left - 14 < (col + 1) * 14 < right + 28
    assert hits / total > 0.5  # a panning background moves everywhere; the object is a few percent of it


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_process_video_info_reads_the_messages_as_the_reference(clips):
    path, _ = clips["wide"]
    messages = [
        {"role": "system", "content": "You describe videos."},
        {
            "role": "user",
            "content": [
                {"type": "video", "video": str(path), "max_pixels": 40_000, "video_end": 3.0},
                {"type": "text", "text": "What moves?"},
            ],
        },
    ]
    images, videos = process_video_info(messages, target_canvas=8, group_size=8)
    their_images, their_videos = reference.process_video_info(messages, target_canvas=8, group_size=8, device="cpu")
    assert images == their_images == [] and len(videos) == len(their_videos) == 1
    assert videos[0].canvases.shape == their_videos[0].canvases.shape
    assert torch.equal(videos[0].gop_ids, their_videos[0].gop_ids)


def test_bad_configurations_and_videos_get_our_errors(tmp_path, clips):
    path, _ = clips["wide"]
    with pytest.raises(OptionError, match="target_canvas"):
        fetch_codec_video(path, target_canvas=30)
    with pytest.raises(OptionError, match="gop_mode"):
        fetch_codec_video(path, gop_mode="scenes")
    with pytest.raises(TypeError, match="unexpected keyword"):
        fetch_codec_video(path, canvas=32)
    with pytest.raises(SelectionError, match="past the video's end"):
        fetch_codec_video(path, start_time=60.0)
    with pytest.raises(OptionError, match="video_backend"):
        process_video_info([], video_backend="frames")


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_bitcost_groups_follow_the_references_rule_on_the_same_packet_sizes(clips):
    from lmms_video_utils.gop import bitcost_gop

    from onevision_encoder.codec.codec_video import packet_sizes

    path, _ = clips["wide"]
    for config in ({}, {"min_group_frames": 4, "max_group_frames": 12, "target_canvas": 24}):
        settings = CodecConfig(gop_mode="bitcost", **config)
        sizes, intra = packet_sizes(str(path), np.arange(150))
        theirs = bitcost_gop(150, sizes, ["I" if key else "P" for key in intra], 25.0, settings)
        assert bitcost_groups(sizes, intra, settings) == theirs
        output = fetch_codec_video(path, gop_mode="bitcost", **config)
        assert output.n_groups == len(theirs) and output.canvases.shape[0] == 4 * len(theirs)


def test_bitcost_groups_close_on_coded_bytes():
    settings = CodecConfig(target_canvas=8, images_per_group=4, min_group_frames=2, max_group_frames=8)
    # Two groups wanted: the bytes of the predicted frames split in two equal shares; an intra frame costs 0.
    sizes = [900, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10]
    intra = [True] + [False] * 11
    groups = bitcost_groups(sizes, intra, settings)
    assert groups[0][0] == 0 and groups[-1][1] == len(sizes)
    assert all(2 <= end - start <= 8 for start, end in groups)
    assert [end for _, end in groups][:-1] == [start for start, _ in groups][1:]  # contiguous
    assert len(groups) == 2
    assert np.array_equal(bitcost_groups([0] * 12, [False] * 12, settings), [(0, 6), (6, 12)])  # nothing coded: uniform
