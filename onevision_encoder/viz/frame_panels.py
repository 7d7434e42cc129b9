"""The four aligned panels of a sampled frame, and the animation made of them.

For every sampled frame of a :class:`~onevision_encoder.codec.codec_selection.CodecSelection` (made with
``select_patches(..., keep_frames=True)``):

1. **original**: the frame the model sees;
2. **uniform sampling**: what a uniform-frame-sampling baseline with the same token budget sees
   (``K // (Hp*Wp)`` whole frames spread evenly; every other frame is dropped and shown dimmed);
3. **saliency**: the frame's patch scores as a heatmap (normalised over the whole clip);
4. **kept patches**: the selected patches in colour, everything else greyed out.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from ..codec.codec_selection import CodecSelection
from ..video.normalisation import LUMA
from .drawing import (
    ACCENT,
    ANCHOR,
    BACKGROUND,
    TEXT,
    TEXT_DIM,
    fit_text,
    font_at,
    font_size,
    line_height,
    saliency_colormap,
)
from .slots import check_frames, check_slot, kept_mask, uniform_slots, whole_frames

PANEL_NAMES = ("original", "uniform sampling", "saliency", "kept patches")  # the panels' labels, in order


def panel_layout(frame_width: int) -> tuple[int, int]:
    """``(label_h, gap)`` of a :func:`panels` row for frames ``frame_width`` pixels wide.

    ``label_h`` is the strip above the panels (a caption line and a line of panel labels); ``gap``
    the space between panels. Both are even, so an even frame size gives an even row size.
    """
    size = font_size(frame_width)
    line = line_height(font_at(size))
    label_h = 2 * line + max(10, size)
    label_h += label_h % 2
    gap = 2 * max(3, round(frame_width / 64))
    return label_h, gap


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


def panel_images(selection: CodecSelection, slot: int) -> list[np.ndarray]:
    """The four panels of ``slot``: uint8 ``[H, W, 3]`` each, in :data:`PANEL_NAMES` order."""
    frames = check_frames(selection)
    slot = check_slot(selection, slot)
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
    kept = _upsample(kept_mask(selection)[slot], patch, height, width)
    greyed = _to_uint8(_grey(frame, 0.42, 14.0))
    kept_panel = np.where(kept[..., None], frame, greyed)
    edge = _outline(kept, max(1, round(width / 200)))
    kept_panel[edge] = ACCENT
    return [frame, uniform, saliency, kept_panel]


def panels(selection: CodecSelection, slot: int) -> np.ndarray:
    """The four panels of sampled frame ``slot`` side by side, labelled, with a caption.

    Returns uint8 ``[H + label_h, 4*W + 3*gap, 3]`` (``label_h, gap = panel_layout(W)``): a caption
    line (slot, source frame id, patches kept in this frame), the panel labels, then the panels
    ``original | uniform sampling | saliency | kept patches``.

    Raises:
        ValueError: the selection holds no frames (select with ``keep_frames=True``).
        IndexError: ``slot`` is not a sampled frame.
    """
    images = panel_images(selection, slot)
    t, hp, wp = selection.grid
    height, width = images[0].shape[:2]
    label_h, gap = panel_layout(width)
    size = font_size(width)
    font, small = font_at(size), font_at(max(11, size - 1))
    line = line_height(font)

    canvas = Image.new("RGB", (4 * width + 3 * gap, height + label_h), BACKGROUND)
    for index, image in enumerate(images):
        canvas.paste(Image.fromarray(image), (index * (width + gap), label_h))
    draw = ImageDraw.Draw(canvas)

    count = int(selection.patches_per_frame()[slot])
    anchor = slot in whole_frames(selection)
    seen = slot in set(uniform_slots(selection).tolist())
    caption = (
        f"slot {slot} of {t}  ·  source frame {int(selection.frame_ids[slot])}  ·  "
        f"{count} of {hp * wp} patches kept" + ("  (whole anchor frame)" if anchor else "")
    )
    pad = max(4, size // 3)
    draw.text((2, pad // 2), fit_text(draw, [caption], font, canvas.width - 4), fill=TEXT, font=font)
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
        text = fit_text(draw, [*options, name], small, width - 4)
        colour = TEXT_DIM
        if index == 1 and seen:
            colour = TEXT
        if index == 3:
            colour = ANCHOR if anchor else ACCENT
        draw.text((index * (width + gap) + 2, y), text, fill=colour, font=small)
    return np.asarray(canvas)


def animation_frames(selection: CodecSelection) -> list[np.ndarray]:
    """One :func:`panels` image per sampled frame, all the same even size (for yuv420p video)."""
    check_frames(selection)
    frames = []
    for slot in range(selection.grid[0]):
        image = panels(selection, slot)
        pad_h, pad_w = image.shape[0] % 2, image.shape[1] % 2
        if pad_h or pad_w:
            image = np.pad(image, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
        frames.append(image)
    return frames
