"""Reading a video's RGB frames (upright): which frames a uniform sample takes (:func:`sample_frame_ids`), the
readers the model inputs, training and evaluation use, and :func:`probe_video`. Each opens the video once and
decodes only what the frames need (:class:`~.reader.VideoReader`)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from .reader import VideoReader
from .video_file import VideoInfo


def read_frames(path: str | os.PathLike[str], frame_ids: np.ndarray, allow_truncated: bool = False) -> list[np.ndarray]:
    """RGB uint8 frames ``[H, W, 3]`` (upright) at ``frame_ids`` (ascending, repeats allowed), in one pass."""
    with VideoReader(path, allow_truncated) as reader:
        return _upright_frames(reader, frame_ids)


def read_sampled_frames(
    path: str | os.PathLike[str],
    num_samples: int,
    slots: np.ndarray | None = None,
    frame_range: tuple[int, int] | None = None,
    allow_truncated: bool = False,
) -> tuple[np.ndarray, list[np.ndarray]]:
    """The :func:`sample_frame_ids` frame ids (only ``slots`` of them when given) and their RGB frames,
    opening the video once. ``frame_range`` ``(start, end)`` samples a clip of the video instead."""
    with VideoReader(path, allow_truncated) as reader:
        try:
            frame_ids = sample_frame_ids(reader.info.num_frames, num_samples, frame_range)
        except ValueError as error:
            raise ValueError(f"{reader.path}: {error}") from None
        if slots is not None:
            frame_ids = frame_ids[slots]
        return frame_ids, _upright_frames(reader, frame_ids)


@dataclass
class VideoFrames:
    """Frames read from a video: RGB uint8 ``frames [T, H, W, 3]`` (upright), the ``frame_ids [T]`` they
    were read at, and the video's :class:`VideoInfo`."""

    frames: np.ndarray
    frame_ids: np.ndarray
    info: VideoInfo


def read_video_frames(
    path: str | os.PathLike[str],
    num_frames: int | None = None,
    frame_range: tuple[int, int] | None = None,
    fps: float | None = None,
    allow_truncated: bool = False,
) -> VideoFrames:
    """Read ``num_frames`` frames spread uniformly over a video (``floor(linspace(0, N - 1, T))``, the
    frames :func:`select_patches` scores; frames repeat when the video is shorter), opening it once and
    decoding only what they need.

    ``frame_range`` ``(start, end)`` (frame indices, end excluded) reads from that clip instead; ``fps``
    (instead of ``num_frames``) reads that many frames per second of it; with neither, every frame of
    the clip is read. Raises the :class:`~onevision_encoder.codec.VideoError` subclasses for missing,
    unreadable or corrupt files, and ``ValueError`` naming the file for a request the video cannot meet.
    """
    if num_frames is not None and fps is not None:
        raise ValueError("num_frames and fps are exclusive: pass one of them")
    with VideoReader(path, allow_truncated) as reader:
        info = reader.info
        try:
            start, end = (0, info.num_frames) if frame_range is None else (int(frame_range[0]), int(frame_range[1]))
            if fps is not None:
                if not info.fps:
                    raise ValueError("the video declares no frame rate, so fps cannot be sampled; pass num_frames")
                if not fps > 0:
                    raise ValueError(f"fps must be > 0, got {fps}")
                num_frames = max(1, int((end - start) / info.fps * fps))
            frame_ids = sample_frame_ids(
                # An empty or reversed range is reported as such (by the range check), not as a count.
                info.num_frames,
                max(end - start, 1) if num_frames is None else num_frames,
                (start, end),
            )
        except ValueError as error:
            raise ValueError(f"{reader.path}: {error}") from None
        return VideoFrames(np.stack(_upright_frames(reader, frame_ids)), frame_ids, info)


def _upright_frames(reader: VideoReader, frame_ids: np.ndarray) -> list[np.ndarray]:
    turns = reader.info.rotation // 90
    frames = {
        sample.frame_index: np.rot90(sample.frame.to_ndarray(format="rgb24"), turns)
        for sample in reader.samples(frame_ids)
    }
    return [frames[int(i)] for i in frame_ids]


def probe_video(path: str | os.PathLike[str], allow_truncated: bool = False) -> VideoInfo:
    """Check that ``path`` holds a decodable video stream; its size, rotation and frame count.

    The count comes from the container header, or from the packets when the header has none.
    """
    with VideoReader(path, allow_truncated) as reader:
        return reader.info


def sample_frame_ids(num_frames: int, num_samples: int, frame_range: tuple[int, int] | None = None) -> np.ndarray:
    """``floor(linspace(0, N - 1, T))`` as int32; frames repeat when the video is shorter than T.

    With ``frame_range`` ``(start, end)`` (frame indices, end excluded) the T frames are spread over
    that clip of the video: ``start + floor(linspace(0, end - start - 1, T))``.
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if num_samples < 1:
        raise ValueError(f"the number of sampled frames must be >= 1, got {num_samples}")
    start, end = (0, num_frames) if frame_range is None else (int(frame_range[0]), int(frame_range[1]))
    if not 0 <= start < end <= num_frames:
        raise ValueError(f"frame range {start}:{end} is not a clip of the video's {num_frames} frames")
    return (start + np.floor(np.linspace(0, end - start - 1, num_samples))).astype(np.int32)
