"""The bar chart of the patches kept in each sampled frame, beside what a uniform-frame-sampling baseline
with the same budget keeps."""

from __future__ import annotations

from PIL import Image, ImageDraw

from ..codec.codec_selection import CodecSelection
from .drawing import (
    ACCENT,
    ANCHOR,
    BACKGROUND,
    GRID_LINE,
    TEXT,
    TEXT_DIM,
    UNIFORM_OUTLINE,
    fit_text,
    font_at,
    line_height,
    vertical_text,
)
from .slots import uniform_slots, whole_frames


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
    whole = whole_frames(selection)
    uniform = set(uniform_slots(selection).tolist())
    peak = max(1, hp * wp, int(counts.max()) if counts.size else 1)

    image = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(image)
    title_font, font = font_at(13), font_at(11)
    title_line, line = line_height(title_font), line_height(font)

    title = f"patches kept per sampled frame  ·  K = {selection.num_patches}  ·  motion: {selection.motion_source}"
    legend = [("selected patches", ACCENT), ("whole (anchor) frame", ANCHOR), ("uniform baseline", None)]
    legend_w = sum(int(draw.textlength(text, font=font)) + 22 for text, _ in legend)
    title_room = width - 8 - (legend_w + 12 if width > legend_w + 240 else 0)
    draw.text((4, 2), fit_text(draw, [title], title_font, title_room), fill=TEXT, font=title_font)
    if width > legend_w + 240:
        x = width - legend_w - 4
        for text, colour in legend:
            box = (x, 4 + (title_line - 10) // 2, x + 10, 4 + (title_line - 10) // 2 + 10)
            draw.rectangle(box, fill=colour, outline=None if colour else UNIFORM_OUTLINE)
            draw.text((x + 14, 2 + (title_line - line) // 2), text, fill=TEXT_DIM, font=font)
            x += int(draw.textlength(text, font=font)) + 22

    # plot area
    axis_label = vertical_text("patches", font, TEXT_DIM)
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
