"""Which files are media, the inputs a folder or list file names, the output name of each, and
opening a picture.

Outputs are named by the path as the user gave it, never by where a symbolic link points: Hugging
Face hub caches and DVC datasets are made of links, and two links to one file are two inputs.
Light on purpose (standard library only; Pillow is imported when a picture is opened), so
command-line help and data-loader workers start fast.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from PIL import Image

VIDEO_SUFFIXES = frozenset(
    {
        ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".flv", ".f4v", ".wmv", ".asf", ".mpg", ".mpeg",
        ".m2v", ".vob", ".ts", ".mts", ".m2ts", ".3gp", ".3g2", ".ogv", ".mxf", ".y4m", ".h264", ".264",
        ".h265", ".265", ".hevc", ".ivf", ".nut",
    }
)  # fmt: skip
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff"})
VIDEO_PATTERNS = tuple(sorted(f"*{suffix}" for suffix in VIDEO_SUFFIXES))
MEDIA_PATTERNS = tuple(sorted(f"*{suffix}" for suffix in VIDEO_SUFFIXES | IMAGE_SUFFIXES))


@dataclass(frozen=True)
class InputListing:
    """The inputs named by a folder or list file, in a stable order.

    ``files`` are the paths as found (inside the folder given, links not followed to their
    targets); ``base`` is the folder their output names are relative to; ``ignored`` counts the
    folder's files that did not match the patterns.
    """

    files: list[Path]
    base: Path
    ignored: int = 0


def matches(path: str | os.PathLike[str], patterns: Sequence[str]) -> bool:
    """Whether the file name matches one of the glob ``patterns`` (case-insensitive: ``.MP4`` is a video)."""
    name = os.path.basename(path).lower()
    return any(fnmatch.fnmatchcase(name, pattern.lower()) for pattern in patterns)


def list_inputs(source: str | os.PathLike[str], patterns: Sequence[str] = VIDEO_PATTERNS) -> InputListing:
    """The files of a folder (recursively, linked folders included, hidden entries skipped) whose names
    match ``patterns``, or every path of a list file (one per line, ``#`` comments; relative paths are
    relative to the list file). A file named as a video or image is the one input itself."""
    source = Path(source)
    if source.is_dir():
        found = sorted(_walk(source))
        files = [path for path in found if matches(path, patterns)]
        return InputListing(files, source, ignored=len(found) - len(files))
    if not source.is_file():
        raise FileNotFoundError(f"{source}: no such folder or list file")
    if matches(source, MEDIA_PATTERNS):
        return InputListing([source], source.parent)
    try:
        text = source.read_text()
    except UnicodeDecodeError:
        raise ValueError(
            f"{source}: not a list file (one path per line): it is not text; give a folder, a list file or a video"
        ) from None
    lines = (line.strip() for line in text.splitlines())
    files = sorted(source.parent / line for line in lines if line and not line.startswith("#"))
    if not files:
        raise ValueError(f"{source}: the list names no file")
    return InputListing(files, Path(os.path.commonpath([os.path.abspath(f.parent) for f in files])))


def _walk(folder: Path) -> Iterable[Path]:
    seen: set[str] = set()  # real paths of the folders walked: a link back up must not loop
    for root, folders, names in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:
            folders.clear()
            continue
        seen.add(real)
        folders[:] = [name for name in folders if not name.startswith(".")]
        for name in names:
            path = Path(root) / name
            if not name.startswith(".") and path.is_file():
                yield path


def output_name(path: str | os.PathLike[str], base: str | os.PathLike[str]) -> str:
    """``path`` relative to ``base`` as given (links not resolved); outside ``base``, its absolute path
    without the leading separator."""
    absolute, root = os.path.abspath(path), os.path.abspath(base)
    if os.path.commonpath([absolute, root]) == root:
        return os.path.relpath(absolute, root)
    return absolute.lstrip(os.sep)


def with_frame_range(name: str, frame_range: tuple[int, int] | None) -> str:
    """``name`` of a clip of the video: ``clip.mp4@100-300`` for frames 100 (included) to 300 (excluded), so
    that two clips of one video get two outputs (``@`` and ``-`` are safe in file names everywhere)."""
    return name if frame_range is None else f"{name}@{frame_range[0]}-{frame_range[1]}"


def output_names(paths: Sequence[str | os.PathLike[str]]) -> dict[str, str]:
    """A distinct, readable output name per input: its file name when those are unique, else its path
    relative to the inputs' common folder. Two paths to one file (links) get two names."""
    absolute = [os.path.abspath(path) for path in paths]
    if len(set(absolute)) < len(absolute):
        repeated = sorted({str(p) for p, a in zip(paths, absolute, strict=True) if absolute.count(a) > 1})
        raise ValueError(f"an input is given more than once: {', '.join(repeated)}")
    names = [os.path.basename(path) for path in absolute]
    if len(set(names)) == len(names):
        return {str(original): name for original, name in zip(paths, names, strict=True)}
    root = os.path.commonpath([os.path.dirname(path) for path in absolute])
    return {str(original): os.path.relpath(path, root) for original, path in zip(paths, absolute, strict=True)}


def same_file(first: str | os.PathLike[str], second: str | os.PathLike[str]) -> bool:
    """Whether writing ``first`` would write ``second`` (both resolved through links)."""
    return os.path.realpath(first) == os.path.realpath(second)


def open_image(path: str | os.PathLike[str], upright: bool = False) -> Image.Image:
    """The picture at ``path`` as RGB; with ``upright`` its EXIF orientation applied (as photo viewers
    show it). A file Pillow cannot decode raises ``ValueError("<path>: cannot be read as an image (...)")``."""
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as image:
            return (ImageOps.exif_transpose(image) if upright else image).convert("RGB")
    except (OSError, SyntaxError) as error:
        raise ValueError(f"{path}: cannot be read as an image ({error})") from None
