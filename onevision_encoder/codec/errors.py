"""Errors of the codec pipeline; each names the file and the problem."""

from __future__ import annotations

import os


class VideoError(Exception):
    """A video could not be used; ``path`` names it and the message says why."""

    def __init__(self, path: str | os.PathLike[str], problem: str) -> None:
        self.path = os.fspath(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class VideoNotFoundError(VideoError, FileNotFoundError):
    """The file does not exist."""


class NotAVideoError(VideoError):
    """The path is not a video file: a directory, a pipe or device (not seekable), a file that cannot be
    opened as a container, or one without a video stream."""


class ImageNotVideoError(NotAVideoError):
    """The file holds a still picture (an image format, or a GIF of one frame), whatever its name says: a
    selection over time would be 64 copies of it. Images are encoded as images (``onevision encode``)."""


class CorruptVideoError(VideoError):
    """The video stream cannot be decoded: corrupt, truncated (fewer frames or a shorter duration than the
    file declares), or no decodable frame."""


class SelectionError(VideoError):
    """The requested selection cannot be made for this video (e.g. more patches than its unpadded grid holds,
    or frames too elongated for the preset's geometry). Options wrong for any video raise ``OptionError``."""
