"""Saving the pictures of a selection: the contact sheet as PNG and the per-frame animation (GIF or H.264 MP4)
beside it. Every file written carries :data:`MARK` (PNG text, GIF comment, MP4 tag), so that :func:`drawn_here`
tells them from the user's."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, PngImagePlugin

from ..codec.codec_selection import CodecSelection
from ..common.files import atomic_write
from ..video.encode import write_video
from .frame_panels import animation_frames
from .sheet import contact_sheet
from .slots import check_frames

ANIMATIONS = ("gif", "mp4", "none")
ANIMATION_FPS = 8


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
    check_frames(selection)
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
