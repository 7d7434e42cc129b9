"""What every picture of a selection draws with: the dark theme's colours, the saliency colour map, Pillow's
built-in font at a size, and text fitted to a width."""

from __future__ import annotations

from functools import cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

Font = ImageFont.FreeTypeFont | ImageFont.ImageFont  # Pillow's built-in font (bitmap without FreeType)

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
def font_at(size: int) -> Font:
    """Pillow's built-in font at ``size`` pixels (the bitmap font where FreeType is missing)."""
    return ImageFont.load_default(size=size)


def font_size(frame_width: int) -> int:
    """Label font size for panels of ``frame_width`` pixels: readable at 224, proportionate at 576."""
    return max(12, round(frame_width / 19))


def line_height(font: Font) -> int:
    return int(font.getbbox("Ag|")[3])


def fit_text(draw: ImageDraw.ImageDraw, options: list[str], font: Font, width: float) -> str:
    """The first of ``options`` that fits ``width`` pixels, else the last one cut with an ellipsis."""
    for text in options:
        if draw.textlength(text, font=font) <= width:
            return text
    text = options[-1]
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..." if text else ""


def vertical_text(text: str, font: Font, fill: tuple[int, int, int]) -> Image.Image:
    """``text`` rotated 90 degrees counter-clockwise on a transparent background."""
    right, bottom = font.getbbox(text)[2:]
    image = Image.new("RGBA", (int(right) + 2, int(bottom) + 2), (0, 0, 0, 0))
    ImageDraw.Draw(image).text((1, 1), text, fill=(*fill, 255), font=font)
    return image.rotate(90, expand=True)
