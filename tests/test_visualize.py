"""The selection pictures: panels, contact sheet, bar chart, animation and the files they are saved to."""

from __future__ import annotations

from dataclasses import replace

import av
import numpy as np
import pytest
from PIL import Image

from onevision_encoder.codec.codec_selection import CodecSelection
from onevision_encoder.codec.select import select_patches
from onevision_encoder.video.synthetic import make_clip, write_clip
from onevision_encoder.viz.charts import patch_count_chart
from onevision_encoder.viz.drawing import ACCENT, ANCHOR
from onevision_encoder.viz.frame_panels import animation_frames, panel_layout, panels
from onevision_encoder.viz.save import save_visualization
from onevision_encoder.viz.sheet import (
    CELL_MAX,
    SHEET_CELL_GAP,
    SHEET_CHART_HEIGHT,
    SHEET_LABEL_WIDTH,
    SHEET_MARGIN,
    contact_sheet,
)
from onevision_encoder.viz.slots import uniform_slots

T, K = 16, 512


@pytest.fixture(scope="module")
def clip_and_path(tmp_path_factory):
    clip = make_clip("moving_object")
    path = write_clip(tmp_path_factory.mktemp("viz") / "clip.mp4", clip)
    return clip, path


@pytest.fixture(scope="module")
def selection(clip_and_path) -> CodecSelection:
    return select_patches(clip_and_path[1], num_frames=T, num_patches=K, keep_frames=True)


def split_panels(selection: CodecSelection, image: np.ndarray) -> list[np.ndarray]:
    """The four panels of a :func:`panels` row, without the label strip."""
    width = selection.frames.shape[2]
    label_h, gap = panel_layout(width)
    return [image[label_h:, i * (width + gap) : i * (width + gap) + width] for i in range(4)]


def saturation(pixels: np.ndarray) -> np.ndarray:
    pixels = pixels.astype(np.float64)
    high, low = pixels.max(axis=-1), pixels.min(axis=-1)
    return (high - low) / np.maximum(high, 1)


def kept_pixels(selection: CodecSelection, slot: int) -> np.ndarray:
    """Boolean [H, W]: pixels of the patches kept in ``slot``, computed from the flat indices."""
    _, hp, wp = selection.grid
    p = selection.patch_size
    flat = selection.visible_indices[selection.visible_indices // (hp * wp) == slot] % (hp * wp)
    grid = np.zeros(hp * wp, dtype=bool)
    grid[flat] = True
    return np.kron(grid.reshape(hp, wp), np.ones((p, p), dtype=bool)).astype(bool)


def object_patch(selection: CodecSelection, clip, slot: int) -> tuple[int, int]:
    """(row, col) of the patch at the centre of the moving square in sampled frame ``slot``."""
    top, left, bottom, right = clip.boxes[int(selection.frame_ids[slot])]
    off_y, off_x = selection.meta["geometry"]["offset"]
    p = selection.patch_size
    return ((top + bottom) // 2 + off_y) // p, ((left + right) // 2 + off_x) // p


def test_panels_size_and_content(selection):
    height, width = selection.frames.shape[1:3]
    label_h, gap = panel_layout(width)
    assert label_h > 0 and gap > 0
    for slot in (0, 5, T - 1):
        image = panels(selection, slot)
        assert image.dtype == np.uint8
        assert image.shape == (height + label_h, 4 * width + 3 * gap, 3)
        original, uniform, heat, kept = split_panels(selection, image)
        np.testing.assert_array_equal(original, selection.frames[slot])
        for panel in (original, heat, kept):
            assert panel.std() > 5
        assert uniform.std() > 1  # strongly dimmed where the baseline drops the frame, but not blank
        assert image[:label_h].std() > 5  # the labels and caption are drawn
    with pytest.raises(IndexError):
        panels(selection, T)


def test_kept_panel_is_greyed_exactly_outside_kept_patches(selection, clip_and_path):
    clip = clip_and_path[0]
    p = selection.patch_size
    for slot in (3, 9):  # moving frames, not whole anchor frames
        assert slot not in selection.meta["whole_frames"]
        kept = kept_pixels(selection, slot)
        assert 0 < kept.sum() < kept.size
        panel = split_panels(selection, panels(selection, slot))[3]
        frame = selection.frames[slot]
        # everything outside the kept patches is grey (R = G = B) and darker than the frame
        outside = panel[~kept]
        assert (outside[:, 0] == outside[:, 1]).all() and (outside[:, 1] == outside[:, 2]).all()
        assert outside.mean() < frame[~kept].mean()
        # the patch on the moving object is kept and in full colour
        row, col = object_patch(selection, clip, slot)
        assert kept[row * p, col * p]
        inner = (slice(row * p + 2, row * p + p - 2), slice(col * p + 2, col * p + p - 2))
        np.testing.assert_array_equal(panel[inner], frame[inner])
        # a kept patch's saturation vs a dropped background patch's
        far_row, far_col = (row + 8) % selection.grid[1], (col + 8) % selection.grid[2]
        assert not kept[far_row * p, far_col * p]
        dropped = panel[far_row * p : far_row * p + p, far_col * p : far_col * p + p]
        assert saturation(panel[inner]).mean() > 0.2
        assert saturation(dropped).max() == 0
        # the outline is drawn inside the kept area, in the accent colour
        assert (panel[kept] == ACCENT).all(axis=-1).any()
    # a whole anchor frame is shown unchanged apart from its outline
    anchor = selection.meta["whole_frames"][0]
    panel = split_panels(selection, panels(selection, anchor))[3]
    np.testing.assert_array_equal(panel[4:-4, 4:-4], selection.frames[anchor][4:-4, 4:-4])


def test_uniform_panel_dims_the_right_slots(selection):
    hp, wp = selection.grid[1:]
    n = K // (hp * wp)
    expected = np.floor(np.linspace(0, T - 1, n)).astype(int)
    np.testing.assert_array_equal(uniform_slots(selection), expected)
    assert list(expected) == [0, 15]
    for slot in range(T):
        uniform = split_panels(selection, panels(selection, slot))[1]
        frame = selection.frames[slot]
        if slot in expected:
            np.testing.assert_array_equal(uniform, frame)
        else:
            assert saturation(uniform).max() == 0
            assert uniform.mean() < 0.5 * frame.mean()


def test_saliency_panel_follows_the_scores(selection):
    p = selection.patch_size
    slot = 6
    heat = split_panels(selection, panels(selection, slot))[2].astype(np.float64)
    scores = selection.scores[slot]
    hi = np.unravel_index(np.argmax(scores), scores.shape)
    lo = np.unravel_index(np.argmin(scores), scores.shape)
    assert scores[hi] > scores[lo]

    def brightness(cell):
        row, col = cell
        return heat[row * p : row * p + p, col * p : col * p + p].mean()

    assert brightness(hi) > brightness(lo) + 60
    assert not np.array_equal(heat, selection.frames[slot])


def test_contact_sheet_size_follows_columns(selection):
    cell = min(CELL_MAX, max(selection.frames.shape[1:3]))
    sheets = {columns: contact_sheet(selection, columns=columns) for columns in (4, 8)}
    for columns, sheet in sheets.items():
        assert sheet.mode == "RGB"
        assert sheet.width == 2 * SHEET_MARGIN + SHEET_LABEL_WIDTH + columns * cell + (columns - 1) * SHEET_CELL_GAP
        assert sheet.height > 4 * cell + 3 * SHEET_CELL_GAP + SHEET_CHART_HEIGHT + 2 * SHEET_MARGIN
        assert np.asarray(sheet).std() > 20
    assert sheets[8].width - sheets[4].width == 4 * (cell + SHEET_CELL_GAP)
    assert sheets[8].height == sheets[4].height
    with pytest.raises(ValueError, match="columns"):
        contact_sheet(selection, columns=0)


def test_patch_count_chart(selection):
    chart = patch_count_chart(selection, 900)
    assert chart.size == (900, 160) and chart.mode == "RGB"
    pixels = np.asarray(chart)
    colours = {tuple(c) for c in pixels.reshape(-1, 3)[::7].tolist()}
    assert ANCHOR in colours  # the whole anchor frame's bar
    assert ACCENT in colours  # the other frames' bars
    assert patch_count_chart(selection, 300, 80).size == (300, 80)


def test_animation_frames(selection):
    frames = animation_frames(selection)
    assert len(frames) == T
    assert len({f.shape for f in frames}) == 1
    height, width = frames[0].shape[:2]
    assert height % 2 == 0 and width % 2 == 0
    np.testing.assert_array_equal(frames[4], panels(selection, 4))


def test_animation_frames_are_padded_to_even_sizes():
    rng = np.random.default_rng(0)
    t, hp, wp, p = 3, 3, 3, 7  # 21 x 21 frames: the row is odd-sized
    indices = np.sort(rng.choice(t * hp * wp, 10, replace=False))
    selection = CodecSelection(
        visible_indices=indices,
        score_order=indices,
        frame_ids=np.arange(t, dtype=np.int32),
        grid=(t, hp, wp),
        scores=rng.random((t, hp, wp)).astype(np.float32),
        motion_source="estimate",
        meta={"patch_size": p, "whole_frames": []},
        frames=rng.integers(0, 256, (t, hp * p, wp * p, 3), dtype=np.uint8),
    )
    row = panels(selection, 0)
    frames = animation_frames(selection)
    assert len(frames) == t
    assert all(f.shape[0] % 2 == 0 and f.shape[1] % 2 == 0 for f in frames)
    assert frames[0].shape[0] - row.shape[0] in (0, 1) and frames[0].shape[1] - row.shape[1] in (0, 1)
    assert row.shape[0] % 2 or row.shape[1] % 2  # the padding was needed


def test_save_png_and_gif(selection, tmp_path):
    written = save_visualization(selection, tmp_path / "sheet")  # no suffix: .png is added
    assert written == {"png": tmp_path / "sheet.png", "animation": tmp_path / "sheet.anim.gif"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sheet.anim.gif", "sheet.png"]  # no temporary files
    with Image.open(written["png"]) as png:
        assert png.format == "PNG" and png.size == contact_sheet(selection).size
    with Image.open(written["animation"]) as gif:
        assert gif.format == "GIF"
        assert gif.n_frames == T
        assert gif.info.get("loop") == 0
        assert 100 <= gif.info["duration"] <= 150  # about 8 fps
        assert gif.size == animation_frames(selection)[0].shape[1::-1]


def test_save_png_and_mp4(selection, tmp_path):
    written = save_visualization(selection, tmp_path / "viz.png", animation="mp4")
    assert written == {"png": tmp_path / "viz.png", "animation": tmp_path / "viz.anim.mp4"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["viz.anim.mp4", "viz.png"]
    height, width = animation_frames(selection)[0].shape[:2]
    with av.open(str(written["animation"])) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.width, stream.codec_context.height) == (width, height)
        assert sum(1 for _ in container.decode(stream)) == T


def test_save_png_only(selection, tmp_path):
    written = save_visualization(selection, tmp_path / "out" / "only.png", animation="none", columns=4)
    assert written == {"png": tmp_path / "out" / "only.png"}
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["only.png"]
    with Image.open(written["png"]) as png:
        assert png.size == contact_sheet(selection, columns=4).size


def test_errors(selection, tmp_path):
    bare = replace(selection, frames=None)
    for call in (
        lambda: save_visualization(bare, tmp_path / "x.png"),
        lambda: panels(bare, 0),
        lambda: contact_sheet(bare),
        lambda: animation_frames(bare),
    ):
        with pytest.raises(ValueError, match="keep_frames=True"):
            call()
    with pytest.raises(ValueError, match="animation"):
        save_visualization(selection, tmp_path / "x.png", animation="webm")
    assert list(tmp_path.iterdir()) == []


def test_lmm_preset_renders(clip_and_path):
    selection = select_patches(clip_and_path[1], preset="lmm", num_patches=2000, num_frames=8, keep_frames=True)
    assert selection.frames.shape == (8, 576, 576, 3)
    label_h, gap = panel_layout(576)
    row = panels(selection, 3)
    assert row.shape == (576 + label_h, 4 * 576 + 3 * gap, 3)
    original, _, _, kept = split_panels(selection, row)
    pad_top = selection.meta["padding"]["top"]
    assert pad_top > 0 and not original[:pad_top].any()  # the zero padding stays black
    assert saturation(kept[:pad_top]).max() == 0
    sheet = contact_sheet(selection)
    assert sheet.width == 2 * SHEET_MARGIN + SHEET_LABEL_WIDTH + 8 * CELL_MAX + 7 * SHEET_CELL_GAP
    frames = animation_frames(selection)
    assert len(frames) == 8 and frames[0].shape[0] % 2 == 0 and frames[0].shape[1] % 2 == 0
