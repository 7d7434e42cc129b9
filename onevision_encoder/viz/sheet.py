"""The contact sheet: one picture of a selection, a few sampled frames as rows of panels above the
patch-count chart."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ..codec.codec_selection import CodecSelection
from .charts import patch_count_chart
from .drawing import ANCHOR, BACKGROUND, GRID_LINE, TEXT, TEXT_DIM, fit_text, font_at, line_height, saliency_colormap
from .frame_panels import PANEL_NAMES, panel_images
from .slots import check_frames, uniform_slots, whole_frames

CELL_MAX = 160  # contact sheet: long side of one cell, pixels

# Contact sheet layout (pixels).
SHEET_MARGIN = 20
SHEET_LABEL_WIDTH = 124  # the row labels at the left
SHEET_CELL_GAP = 6
SHEET_CHART_HEIGHT = 160


def _cell_size(frame_h: int, frame_w: int) -> tuple[int, int]:
    """(height, width) of a contact-sheet cell: the frame scaled to at most :data:`CELL_MAX` on its long side."""
    scale = min(1.0, CELL_MAX / max(frame_h, frame_w))
    return max(1, round(frame_h * scale)), max(1, round(frame_w * scale))


def _colorbar(width: int, height: int) -> Image.Image:
    ramp = saliency_colormap()[np.linspace(0, 255, width).round().astype(np.uint8)]
    return Image.fromarray(np.repeat(ramp[None], height, axis=0))


def contact_sheet(selection: CodecSelection, columns: int = 8) -> Image.Image:
    """One picture of the selection: a title, 4 rows (one per panel kind) x ``columns`` sampled frames
    (``floor(linspace(0, T - 1, columns))``), and the patch-count chart across the full width.

    Size: width ``2*SHEET_MARGIN + SHEET_LABEL_WIDTH + columns*cell_w + (columns - 1)*SHEET_CELL_GAP``;
    cells are the frames scaled to at most :data:`CELL_MAX` pixels on the long side.
    """
    frames = check_frames(selection)
    if columns < 1:
        raise ValueError(f"columns must be >= 1, got {columns}")
    t, hp, wp = selection.grid
    cell_h, cell_w = _cell_size(*frames.shape[1:3])
    slots = np.floor(np.linspace(0, t - 1, columns)).astype(np.int64)
    whole = whole_frames(selection)
    counts = selection.patches_per_frame()

    title_font, sub_font, font, small = font_at(18), font_at(12), font_at(13), font_at(11)
    title_h = line_height(title_font) + 6 + line_height(sub_font) + 14
    header_h = line_height(small) + 6
    grid_w = columns * cell_w + (columns - 1) * SHEET_CELL_GAP
    width = 2 * SHEET_MARGIN + SHEET_LABEL_WIDTH + grid_w
    grid_top = SHEET_MARGIN + title_h + header_h
    chart_top = grid_top + 4 * cell_h + 3 * SHEET_CELL_GAP + 14
    height = chart_top + SHEET_CHART_HEIGHT + SHEET_MARGIN

    sheet = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(sheet)

    # title and subtitle
    video = selection.meta.get("video") or {}
    name = Path(str(video.get("path", ""))).name
    total = t * hp * wp
    title = f"Codec patch selection{'  ·  ' + name if name else ''}"
    subtitle = (
        f"K = {selection.num_patches} of {total} patches ({100 * selection.num_patches / max(total, 1):.1f}%)  ·  "
        f"T = {t} frames, {hp}x{wp} patches of {selection.patch_size}px  ·  "
        f"preset {selection.meta.get('preset', '?')}  ·  motion: {selection.motion_source}"
        + ("  ·  still clip: whole frames" if selection.meta.get("static_fallback") else "")
    )
    room = width - 2 * SHEET_MARGIN
    draw.text((SHEET_MARGIN, SHEET_MARGIN), fit_text(draw, [title], title_font, room), fill=TEXT, font=title_font)
    sub_y = SHEET_MARGIN + line_height(title_font) + 6
    draw.text((SHEET_MARGIN, sub_y), fit_text(draw, [subtitle], sub_font, room), fill=TEXT_DIM, font=sub_font)

    # column headers
    grid_left = SHEET_MARGIN + SHEET_LABEL_WIDTH
    for column, slot in enumerate(slots):
        x = grid_left + column * (cell_w + SHEET_CELL_GAP)
        frame_id = int(selection.frame_ids[slot])
        options = [
            f"slot {slot}  ·  frame {frame_id}  ·  {int(counts[slot])} kept",
            f"#{slot}  ·  f{frame_id}  ·  {int(counts[slot])}",
            f"#{slot}",
        ]
        colour = ANCHOR if int(slot) in whole else TEXT_DIM
        draw.text((x, grid_top - header_h), fit_text(draw, options, small, cell_w), fill=colour, font=small)

    # row labels
    n_uniform = len(uniform_slots(selection))
    # under each label a note, under saliency a colour bar
    notes = ["frames as sampled", f"{n_uniform} of {t} frames, whole", None, f"{selection.num_patches} patches"]
    label_room = SHEET_LABEL_WIDTH - 10
    for row, (label, note) in enumerate(zip(PANEL_NAMES, notes, strict=True)):
        y = grid_top + row * (cell_h + SHEET_CELL_GAP) + cell_h // 2 - line_height(font)
        draw.text((SHEET_MARGIN, y), fit_text(draw, [label], font, label_room), fill=TEXT, font=font)
        note_y = y + line_height(font) + 5
        if note is None:
            bar_w = min(label_room, 90)
            sheet.paste(_colorbar(bar_w, 8), (SHEET_MARGIN, note_y))
            draw.text((SHEET_MARGIN, note_y + 10), "low", fill=TEXT_DIM, font=small)
            high_w = draw.textlength("high", font=small)
            draw.text((SHEET_MARGIN + bar_w - high_w, note_y + 10), "high", fill=TEXT_DIM, font=small)
        else:
            draw.text((SHEET_MARGIN, note_y), fit_text(draw, [note], small, label_room), fill=TEXT_DIM, font=small)

    # cells
    for column, slot in enumerate(slots):
        x = grid_left + column * (cell_w + SHEET_CELL_GAP)
        for row, panel in enumerate(panel_images(selection, int(slot))):
            cell = Image.fromarray(panel)
            if cell.size != (cell_w, cell_h):
                cell = cell.resize((cell_w, cell_h), Image.Resampling.LANCZOS, reducing_gap=2.0)
            sheet.paste(cell, (x, grid_top + row * (cell_h + SHEET_CELL_GAP)))

    chart = patch_count_chart(selection, width - 2 * SHEET_MARGIN, SHEET_CHART_HEIGHT)
    sheet.paste(chart, (SHEET_MARGIN, chart_top))
    draw.line((SHEET_MARGIN, chart_top - 8, width - SHEET_MARGIN, chart_top - 8), fill=GRID_LINE)
    return sheet
