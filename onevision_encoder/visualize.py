"""Pictures that explain a codec-style patch selection.

For every sampled frame of a :class:`~onevision_encoder.codec.codec_selection.CodecSelection` (made with
``select_patches(..., keep_frames=True)``) four aligned panels are drawn:

1. **original**: the frame the model sees;
2. **uniform sampling**: what a uniform-frame-sampling baseline with the same token budget sees
   (``K // (Hp*Wp)`` whole frames spread evenly; every other frame is dropped and shown dimmed);
3. **saliency**: the frame's patch scores as a heatmap (normalised over the whole clip);
4. **kept patches**: the selected patches in colour, everything else greyed out.

:func:`contact_sheet` lays a few sampled frames out as a grid with a bar chart of patches kept per
frame; :func:`animation_frames` and :func:`save_visualization` turn every sampled frame into an
animation (GIF or H.264 MP4). Only numpy and Pillow are used. Every file written carries
:data:`MARK` (PNG text, GIF comment, MP4 tag), so that :func:`drawn_here` tells them from the user's.
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont, PngImagePlugin

from .codec.codec_selection import CodecSelection
from .files import atomic_write
from .video.encode import write_video
from .video.normalisation import LUMA

__all__ = [
    "ANIMATIONS",
    "CELL_MAX",
    "PANEL_NAMES",
    "animation_frames",
    "contact_sheet",
    "drawn_here",
    "panel_layout",
    "panels",
    "patch_count_chart",
    "saliency_colormap",
    "save_visualization",
    "uniform_slots",
    "visualization_paths",
]

Font = ImageFont.FreeTypeFont | ImageFont.ImageFont  # Pillow's built-in font (bitmap without FreeType)

PANEL_NAMES = ("original", "uniform sampling", "saliency", "kept patches")  # the panels' labels, in order
ANIMATIONS = ("gif", "mp4", "none")
ANIMATION_FPS = 8
CELL_MAX = 160  # contact sheet: long side of one cell, pixels

# Contact sheet layout (pixels).
SHEET_MARGIN = 20
SHEET_LABEL_WIDTH = 124  # the row labels at the left
SHEET_CELL_GAP = 6
SHEET_CHART_HEIGHT = 160

# Colours (dark theme).
BACKGROUND = (17, 20, 26)
TEXT = (226, 230, 238)
TEXT_DIM = (140, 148, 162)
ACCENT = (94, 234, 212)  # outline of kept patches, selected-patch bars
ANCHOR = (251, 191, 36)  # whole (anchor) frames
GRID_LINE = (52, 58, 70)
UNIFORM_OUTLINE = (150, 158, 172)  # the uniform baseline's whole frames in the bar chart

# Inferno-like perceptual ramp: control points (position, RGB), interpolated into a 256-entry table.
_RAMP = (
    (0.00, (0, 0, 4)),
    (0.13, (31, 12, 72)),
    (0.25, (85, 15, 109)),
    (0.38, (136, 34, 106)),
    (0.50, (186, 54, 85)),
    (0.63, (227, 89, 51)),
    (0.75, (249, 140, 10)),
    (0.88, (249, 201, 50)),
    (1.00, (252, 255, 164)),
)


# --- small helpers -------------------------------------------------------------------------------


@cache
def saliency_colormap() -> np.ndarray:
    """The heatmap's lookup table: uint8 ``[256, 3]``, dark purple (low) to pale yellow (high)."""
    stops = np.array([p for p, _ in _RAMP])
    colours = np.array([c for _, c in _RAMP], dtype=np.float64)
    x = np.linspace(0.0, 1.0, 256)
    table = np.stack([np.interp(x, stops, colours[:, c]) for c in range(3)], axis=-1)
    table = np.round(table).astype(np.uint8)
    table.flags.writeable = False
    return table


@cache
def _font(size: int) -> Font:
    """Pillow's built-in font at ``size`` pixels (the bitmap font where FreeType is missing)."""
    return ImageFont.load_default(size=size)


def _font_size(frame_width: int) -> int:
    """Label font size for panels of ``frame_width`` pixels: readable at 224, proportionate at 576."""
    return max(12, round(frame_width / 19))


def _line_height(font: Font) -> int:
    return int(font.getbbox("Ag|")[3])


def panel_layout(frame_width: int) -> tuple[int, int]:
    """``(label_h, gap)`` of a :func:`panels` row for frames ``frame_width`` pixels wide.

    ``label_h`` is the strip above the panels (a caption line and a line of panel labels); ``gap``
    the space between panels. Both are even, so an even frame size gives an even row size.
    """
    size = _font_size(frame_width)
    line = _line_height(_font(size))
    label_h = 2 * line + max(10, size)
    label_h += label_h % 2
    gap = 2 * max(3, round(frame_width / 64))
    return label_h, gap


def _check_frames(selection: CodecSelection) -> np.ndarray:
    frames = selection.frames
    if frames is None:
        raise ValueError(
            "this selection holds no frames: select with keep_frames=True "
            "(select_patches(..., keep_frames=True)); frames are not saved with a selection"
        )
    t = selection.grid[0]
    if frames.ndim != 4 or frames.shape[0] != t or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 [T={t}, H, W, 3], got shape {frames.shape}")
    return frames


def _check_slot(selection: CodecSelection, slot: int) -> int:
    t = selection.grid[0]
    slot = int(slot)
    if not 0 <= slot < t:
        raise IndexError(f"slot {slot} is out of range for {t} sampled frames")
    return slot


def uniform_slots(selection: CodecSelection) -> np.ndarray:
    """Slots a uniform-frame-sampling baseline with the same token budget keeps whole.

    ``n = K // (Hp*Wp)`` frames (at least 1, at most T) at ``floor(linspace(0, T - 1, n))``, int64.
    """
    t, hp, wp = selection.grid
    n = min(t, max(1, selection.num_patches // (hp * wp)))
    return np.unique(np.floor(np.linspace(0, t - 1, n)).astype(np.int64))


def _kept_mask(selection: CodecSelection) -> np.ndarray:
    """Boolean ``[T, Hp, Wp]``: True where a patch was selected."""
    t, hp, wp = selection.grid
    mask = np.zeros(t * hp * wp, dtype=bool)
    mask[selection.visible_indices] = True
    return mask.reshape(t, hp, wp)


def _whole_frames(selection: CodecSelection) -> set[int]:
    return {int(s) for s in selection.meta.get("whole_frames", []) or []}


def _upsample(grid: np.ndarray, patch: int, height: int, width: int) -> np.ndarray:
    """Nearest (patch blocks) upsampling of ``[Hp, Wp, ...]`` to ``[height, width, ...]``."""
    big = np.repeat(np.repeat(grid, patch, axis=0), patch, axis=1)[:height, :width]
    if big.shape[:2] != (height, width):  # a grid smaller than the frame: extend the last patches
        pad = [(0, height - big.shape[0]), (0, width - big.shape[1])] + [(0, 0)] * (big.ndim - 2)
        big = np.pad(big, pad, mode="edge")
    return big


def _grey(frame: np.ndarray, scale: float, offset: float) -> np.ndarray:
    """Desaturated and darkened copy of ``frame``: R = G = B = ``luma * scale + offset``, float32."""
    luma = frame.astype(np.float32) @ LUMA
    return np.repeat((luma * scale + offset)[..., None], 3, axis=-1)


def _outline(mask: np.ndarray, thickness: int) -> np.ndarray:
    """Pixels of ``mask`` within ``thickness`` of its border (the image edge counts as outside)."""
    inside = np.pad(mask, thickness, constant_values=False)
    eroded = inside.copy()
    height, width = mask.shape
    for dy in range(-thickness, thickness + 1):
        for dx in range(-thickness, thickness + 1):
            if dy or dx:
                y0, x0 = thickness + dy, thickness + dx
                eroded[thickness:-thickness, thickness:-thickness] &= inside[y0 : y0 + height, x0 : x0 + width]
    return mask & ~eroded[thickness:-thickness, thickness:-thickness]


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


# --- the four panels -----------------------------------------------------------------------------


def _panel_images(selection: CodecSelection, slot: int) -> list[np.ndarray]:
    """The four panels of ``slot``: uint8 ``[H, W, 3]`` each, in :data:`PANEL_NAMES` order."""
    frames = _check_frames(selection)
    slot = _check_slot(selection, slot)
    frame = np.ascontiguousarray(frames[slot], dtype=np.uint8)
    height, width = frame.shape[:2]
    patch = selection.patch_size

    # uniform sampling: whole frame where the baseline samples it, strongly dimmed elsewhere
    if slot in set(uniform_slots(selection).tolist()):
        uniform = frame.copy()
    else:
        uniform = _to_uint8(_grey(frame, 0.22, 8.0))

    # saliency heatmap over a darkened frame
    if selection.scores is not None:
        peak = float(np.max(selection.scores))
        level = selection.scores[slot] / peak if peak > 0 else np.zeros_like(selection.scores[slot])
        codes = np.clip(np.round(level * 255), 0, 255).astype(np.uint8)
        heat = _upsample(saliency_colormap()[codes], patch, height, width).astype(np.float32)
        saliency = _to_uint8(0.72 * heat + 0.28 * frame.astype(np.float32))
    else:
        saliency = _to_uint8(_grey(frame, 0.3, 10.0))

    # kept patches in colour, the rest greyed out, an outline around the kept area
    kept = _upsample(_kept_mask(selection)[slot], patch, height, width)
    greyed = _to_uint8(_grey(frame, 0.42, 14.0))
    kept_panel = np.where(kept[..., None], frame, greyed)
    edge = _outline(kept, max(1, round(width / 200)))
    kept_panel[edge] = ACCENT
    return [frame, uniform, saliency, kept_panel]


def _fit_text(draw: ImageDraw.ImageDraw, options: list[str], font: Font, width: float) -> str:
    """The first of ``options`` that fits ``width`` pixels, else the last one cut with an ellipsis."""
    for text in options:
        if draw.textlength(text, font=font) <= width:
            return text
    text = options[-1]
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..." if text else ""


def panels(selection: CodecSelection, slot: int) -> np.ndarray:
    """The four panels of sampled frame ``slot`` side by side, labelled, with a caption.

    Returns uint8 ``[H + label_h, 4*W + 3*gap, 3]`` (``label_h, gap = panel_layout(W)``): a caption
    line (slot, source frame id, patches kept in this frame), the panel labels, then the panels
    ``original | uniform sampling | saliency | kept patches``.

    Raises:
        ValueError: the selection holds no frames (select with ``keep_frames=True``).
        IndexError: ``slot`` is not a sampled frame.
    """
    images = _panel_images(selection, slot)
    t, hp, wp = selection.grid
    height, width = images[0].shape[:2]
    label_h, gap = panel_layout(width)
    size = _font_size(width)
    font, small = _font(size), _font(max(11, size - 1))
    line = _line_height(font)

    canvas = Image.new("RGB", (4 * width + 3 * gap, height + label_h), BACKGROUND)
    for index, image in enumerate(images):
        canvas.paste(Image.fromarray(image), (index * (width + gap), label_h))
    draw = ImageDraw.Draw(canvas)

    count = int(selection.patches_per_frame()[slot])
    anchor = slot in _whole_frames(selection)
    seen = slot in set(uniform_slots(selection).tolist())
    caption = (
        f"slot {slot} of {t}  ·  source frame {int(selection.frame_ids[slot])}  ·  "
        f"{count} of {hp * wp} patches kept" + ("  (whole anchor frame)" if anchor else "")
    )
    pad = max(4, size // 3)
    draw.text((2, pad // 2), _fit_text(draw, [caption], font, canvas.width - 4), fill=TEXT, font=font)
    n_uniform = len(uniform_slots(selection))
    longer = [  # each panel's longer labels, tried before its name where they fit
        [],
        [
            f"uniform sampling ({n_uniform}/{t}): " + ("seen" if seen else "dropped"),
            "uniform: " + ("seen" if seen else "dropped"),
        ],
        ["saliency (clip-normalised)"],
        [f"kept patches ({count})"],
    ]
    y = pad // 2 + line + pad
    for index, (options, name) in enumerate(zip(longer, PANEL_NAMES, strict=True)):
        text = _fit_text(draw, [*options, name], small, width - 4)
        colour = TEXT_DIM
        if index == 1 and seen:
            colour = TEXT
        if index == 3:
            colour = ANCHOR if anchor else ACCENT
        draw.text((index * (width + gap) + 2, y), text, fill=colour, font=small)
    return np.asarray(canvas)


def animation_frames(selection: CodecSelection) -> list[np.ndarray]:
    """One :func:`panels` image per sampled frame, all the same even size (for yuv420p video)."""
    _check_frames(selection)
    frames = []
    for slot in range(selection.grid[0]):
        image = panels(selection, slot)
        pad_h, pad_w = image.shape[0] % 2, image.shape[1] % 2
        if pad_h or pad_w:
            image = np.pad(image, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
        frames.append(image)
    return frames


# --- bar chart -----------------------------------------------------------------------------------


def _vertical_text(text: str, font: Font, fill: tuple[int, int, int]) -> Image.Image:
    """``text`` rotated 90 degrees counter-clockwise on a transparent background."""
    right, bottom = font.getbbox(text)[2:]
    image = Image.new("RGBA", (int(right) + 2, int(bottom) + 2), (0, 0, 0, 0))
    ImageDraw.Draw(image).text((1, 1), text, fill=(*fill, 255), font=font)
    return image.rotate(90, expand=True)


def patch_count_chart(selection: CodecSelection, width: int, height: int = 160) -> Image.Image:
    """Bar chart of the patches kept in each of the T sampled frames, as an RGB image ``width x height``.

    Whole (anchor) frames (``meta["whole_frames"]``) are drawn in a distinct colour; the frames a
    uniform-sampling baseline with the same budget would keep whole (:func:`uniform_slots`) are outlined
    behind the bars. The y axis runs to the larger of a whole frame (``Hp*Wp``) and the busiest frame;
    the title gives K and the motion source.
    """
    if width < 1 or height < 1:
        raise ValueError(f"chart size must be positive, got {width}x{height}")
    t, hp, wp = selection.grid
    counts = selection.patches_per_frame()
    whole = _whole_frames(selection)
    uniform = set(uniform_slots(selection).tolist())
    peak = max(1, hp * wp, int(counts.max()) if counts.size else 1)

    image = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(image)
    title_font, font = _font(13), _font(11)
    title_line, line = _line_height(title_font), _line_height(font)

    title = f"patches kept per sampled frame  ·  K = {selection.num_patches}  ·  motion: {selection.motion_source}"
    legend = [("selected patches", ACCENT), ("whole (anchor) frame", ANCHOR), ("uniform baseline", None)]
    legend_w = sum(int(draw.textlength(text, font=font)) + 22 for text, _ in legend)
    title_room = width - 8 - (legend_w + 12 if width > legend_w + 240 else 0)
    draw.text((4, 2), _fit_text(draw, [title], title_font, title_room), fill=TEXT, font=title_font)
    if width > legend_w + 240:
        x = width - legend_w - 4
        for text, colour in legend:
            box = (x, 4 + (title_line - 10) // 2, x + 10, 4 + (title_line - 10) // 2 + 10)
            draw.rectangle(box, fill=colour, outline=None if colour else UNIFORM_OUTLINE)
            draw.text((x + 14, 2 + (title_line - line) // 2), text, fill=TEXT_DIM, font=font)
            x += int(draw.textlength(text, font=font)) + 22

    # plot area
    axis_label = _vertical_text("patches", font, TEXT_DIM)
    y_tick_w = int(max(draw.textlength(str(peak), font=font), draw.textlength("0", font=font)))
    left = 4 + axis_label.width + 4 + y_tick_w + 6
    right = width - 8
    top = 2 + title_line + 10
    bottom = height - (line + 4) - (line + 6)  # x tick labels, then the x axis label
    if right - left < t or bottom - top < 8:  # too small for axes: bars only
        left, right, top, bottom = 0, width, min(height - 1, 2 + title_line + 4), height
    plot_h = max(1, bottom - top)

    for fraction in (0.5, 1.0):
        y = bottom - round(fraction * plot_h)
        draw.line((left, y, right, y), fill=GRID_LINE)
    if left > 0:
        draw.text(
            (left - 6 - draw.textlength(str(peak), font=font), top - line // 2 - 1), str(peak), fill=TEXT_DIM, font=font
        )
        draw.text((left - 6 - draw.textlength("0", font=font), bottom - line // 2 - 1), "0", fill=TEXT_DIM, font=font)
        image.paste(axis_label, (4, top + (plot_h - axis_label.height) // 2), axis_label)

    slot_w = (right - left) / max(t, 1)
    bar_w = max(1, int(slot_w * 0.78))
    for slot in sorted(uniform):  # what uniform sampling spends: whole frames, outlined behind the bars
        x0 = left + round(slot * slot_w + (slot_w - bar_w) / 2)
        bar_h = round(hp * wp / peak * plot_h)
        draw.rectangle((x0, bottom - bar_h, x0 + bar_w - 1, bottom - 1), outline=UNIFORM_OUTLINE)
    for slot in range(t):
        x0 = left + round(slot * slot_w + (slot_w - bar_w) / 2)
        bar_h = round(int(counts[slot]) / peak * plot_h)
        if bar_h > 0:
            draw.rectangle((x0, bottom - bar_h, x0 + bar_w - 1, bottom - 1), fill=ANCHOR if slot in whole else ACCENT)
    draw.line((left, bottom, right, bottom), fill=TEXT_DIM)

    if left > 0:  # x ticks: slot numbers at a step that leaves room between labels
        label_w = draw.textlength(str(t - 1), font=font) + 10
        step = 1
        while step * slot_w < label_w:
            step = {1: 2, 2: 4, 4: 8}.get(step, step + 8 if step < 16 else step * 2)
        for slot in range(0, t, step):
            x = left + (slot + 0.5) * slot_w
            text = str(slot)
            draw.line((x, bottom, x, bottom + 3), fill=TEXT_DIM)
            draw.text((x - draw.textlength(text, font=font) / 2, bottom + 4), text, fill=TEXT_DIM, font=font)
        text = "sampled frame (slot)"
        draw.text(
            (left + (right - left - draw.textlength(text, font=font)) / 2, bottom + 4 + line + 4),
            text,
            fill=TEXT_DIM,
            font=font,
        )
    return image


# --- contact sheet -------------------------------------------------------------------------------


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
    frames = _check_frames(selection)
    if columns < 1:
        raise ValueError(f"columns must be >= 1, got {columns}")
    t, hp, wp = selection.grid
    cell_h, cell_w = _cell_size(*frames.shape[1:3])
    slots = np.floor(np.linspace(0, t - 1, columns)).astype(np.int64)
    whole = _whole_frames(selection)
    counts = selection.patches_per_frame()

    title_font, sub_font, font, small = _font(18), _font(12), _font(13), _font(11)
    title_h = _line_height(title_font) + 6 + _line_height(sub_font) + 14
    header_h = _line_height(small) + 6
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
    draw.text((SHEET_MARGIN, SHEET_MARGIN), _fit_text(draw, [title], title_font, room), fill=TEXT, font=title_font)
    sub_y = SHEET_MARGIN + _line_height(title_font) + 6
    draw.text((SHEET_MARGIN, sub_y), _fit_text(draw, [subtitle], sub_font, room), fill=TEXT_DIM, font=sub_font)

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
        draw.text((x, grid_top - header_h), _fit_text(draw, options, small, cell_w), fill=colour, font=small)

    # row labels
    n_uniform = len(uniform_slots(selection))
    # under each label a note, under saliency a colour bar
    notes = ["frames as sampled", f"{n_uniform} of {t} frames, whole", None, f"{selection.num_patches} patches"]
    label_room = SHEET_LABEL_WIDTH - 10
    for row, (label, note) in enumerate(zip(PANEL_NAMES, notes, strict=True)):
        y = grid_top + row * (cell_h + SHEET_CELL_GAP) + cell_h // 2 - _line_height(font)
        draw.text((SHEET_MARGIN, y), _fit_text(draw, [label], font, label_room), fill=TEXT, font=font)
        note_y = y + _line_height(font) + 5
        if note is None:
            bar_w = min(label_room, 90)
            sheet.paste(_colorbar(bar_w, 8), (SHEET_MARGIN, note_y))
            draw.text((SHEET_MARGIN, note_y + 10), "low", fill=TEXT_DIM, font=small)
            high_w = draw.textlength("high", font=small)
            draw.text((SHEET_MARGIN + bar_w - high_w, note_y + 10), "high", fill=TEXT_DIM, font=small)
        else:
            draw.text((SHEET_MARGIN, note_y), _fit_text(draw, [note], small, label_room), fill=TEXT_DIM, font=small)

    # cells
    for column, slot in enumerate(slots):
        x = grid_left + column * (cell_w + SHEET_CELL_GAP)
        for row, panel in enumerate(_panel_images(selection, int(slot))):
            cell = Image.fromarray(panel)
            if cell.size != (cell_w, cell_h):
                cell = cell.resize((cell_w, cell_h), Image.Resampling.LANCZOS, reducing_gap=2.0)
            sheet.paste(cell, (x, grid_top + row * (cell_h + SHEET_CELL_GAP)))

    chart = patch_count_chart(selection, width - 2 * SHEET_MARGIN, SHEET_CHART_HEIGHT)
    sheet.paste(chart, (SHEET_MARGIN, chart_top))
    draw.line((SHEET_MARGIN, chart_top - 8, width - SHEET_MARGIN, chart_top - 8), fill=GRID_LINE)
    return sheet


# --- files ---------------------------------------------------------------------------------------


def _gif_frames(frames: list[np.ndarray]) -> list[Image.Image]:
    """Palette images sharing one palette: 192 colours fitted to a sample of the frames plus a 64-step
    grey ramp (the greyed-out areas would otherwise band). One palette keeps the frames consistent and
    lets the GIF store only what changes; it is also much faster than quantising every frame."""
    sample = np.concatenate(frames[:: max(1, len(frames) // 6)], axis=0)
    fitted = Image.fromarray(sample).quantize(colors=192, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
    colours = np.array(fitted.getpalette()[: 192 * 3], dtype=np.uint8).reshape(-1, 3)
    greys = np.repeat(np.linspace(0, 160, 64).round().astype(np.uint8)[:, None], 3, axis=1)
    table = np.concatenate([colours, greys]).reshape(-1)
    palette = Image.new("P", (1, 1))
    palette.putpalette(table.tolist() + [0] * (768 - table.size))
    return [Image.fromarray(frame).quantize(palette=palette, dither=Image.Dither.NONE) for frame in frames]


def visualization_paths(out: str | os.PathLike[str], animation: str = "gif") -> dict[str, Path]:
    """The files :func:`save_visualization` writes for ``out``: ``{"png": path}`` plus ``"animation": path``
    unless ``animation == "none"``.

    ``out`` gets a ``.png`` suffix unless it already ends in ``.png``; the animation sits beside it as
    ``<stem>.anim.gif`` or ``<stem>.anim.mp4`` (``clip.png`` -> ``clip.anim.mp4``), never ``<stem>.mp4``,
    which is where the video that was drawn usually is.

    Raises:
        ValueError: ``animation`` is not ``gif``, ``mp4`` or ``none``.
    """
    if animation not in ANIMATIONS:
        raise ValueError(f"animation must be one of {', '.join(ANIMATIONS)}, got {animation!r}")
    png = Path(out)
    if png.suffix.lower() != ".png":
        png = png.with_name(png.name + ".png")
    paths = {"png": png}
    if animation != "none":
        paths["animation"] = png.with_suffix(f".anim.{animation}")
    return paths


MARK = "onevision viz"  # in what save_visualization writes: PNG "Software" text, GIF comment, MP4 "comment" tag


def drawn_here(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a picture or animation that :func:`save_visualization` wrote (it carries :data:`MARK`)."""
    path = Path(path)
    if path.suffix.lower() == ".mp4":
        import av
        from av.error import FFmpegError

        try:
            with av.open(str(path)) as container:
                return container.metadata.get("comment") == MARK
        except (OSError, ValueError, FFmpegError):
            return False
    try:
        with Image.open(path) as image:
            mark = image.info.get("Software" if image.format == "PNG" else "comment")
    except (OSError, ValueError):  # PIL's UnidentifiedImageError is an OSError
        return False
    return (mark.decode(errors="replace") if isinstance(mark, bytes) else mark) == MARK


def save_visualization(
    selection: CodecSelection, out: str | os.PathLike[str], animation: str = "gif", columns: int = 8
) -> dict[str, Path]:
    """Write the contact sheet as PNG to ``out`` and, unless ``animation == "none"``, the per-frame
    animation beside it (8 fps, looping GIF), named as :func:`visualization_paths` says: ``x.png`` ->
    ``x.anim.gif`` or ``x.anim.mp4``.

    ``columns`` is passed to :func:`contact_sheet`. Every file is written atomically.
    Returns ``{"png": path}`` plus ``"animation": path`` when one was written.

    Raises:
        ValueError: the selection holds no frames, or ``animation`` is not ``gif``, ``mp4`` or ``none``.
    """
    paths = visualization_paths(out, animation)
    _check_frames(selection)
    png = paths["png"]
    png.parent.mkdir(parents=True, exist_ok=True)

    sheet = contact_sheet(selection, columns=columns)
    text = PngImagePlugin.PngInfo()
    text.add_text("Software", MARK)
    written = {"png": atomic_write(png, lambda stream: sheet.save(stream, format="PNG", optimize=True, pnginfo=text))}
    if animation == "none":
        return written

    frames = animation_frames(selection)
    target = paths["animation"]
    if animation == "gif":
        images = _gif_frames(frames)
        written["animation"] = atomic_write(
            target,
            lambda stream: images[0].save(
                stream,
                format="GIF",
                save_all=True,
                append_images=images[1:],
                duration=round(1000 / ANIMATION_FPS),
                loop=0,
                comment=MARK.encode(),
            ),
        )
    else:
        written["animation"] = write_video(target, frames, codec="h264", fps=ANIMATION_FPS, metadata={"comment": MARK})
    return written
