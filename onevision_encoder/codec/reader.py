"""Streaming PyAV reader: decodes what the sampled frames need, once, and keeps only them.

For each sampled frame it yields the decoded frame, its reference frame and the codec's motion
vectors when the decoder exports them. The reference is the frame the vectors point to: the
previous frame in a stream without B-frames; with B-frames, the last I or P frame shown before it
(a P frame's vectors skip the B frames between I/P frames, and a B frame's past vectors point to
that I/P frame too). Frames without codec vectors take the frame shown just before them, against
which their motion is estimated. Nothing else is kept, so memory stays bounded whatever the
video's length.

Cost follows what is sampled (streams of the codecs :mod:`.bitstream` checks whose packets all carry distinct
timestamps): frames are placed by their timestamps from a packet scan (:mod:`.seeking`; made with the frame
count's own pass where there is one, else only when the sampled frames leave gaps a seek could skip),
decoding seeks ahead to the last random access point before a sampled frame when that skips frames (a clip
at the end of a long video, or samples further apart than the GOP), and H.264 non-reference B frames that
are neither sampled nor the frame before a sampled one are not decoded. The frames, vectors and references
are bitwise those of a decode from the first frame: every decoded frame is checked to arrive at its expected
index, and on any surprise the reader decodes from the first frame instead (``stats.restarts``).

Decoding stays slice-threaded (PyAV's default). Frame threading exports different vectors run to run for
H.264 B frames (not P frames) and gives bit-exact pixels for every codec, but it costs about a third more
CPU time, and in a selection the scoring threads already keep the other core busy: measured on 2 cores,
frame threads made selections slower (BBB 657 vs 581 ms, 64 frames of a 10-minute video 1.71 vs 1.23 s).

A file cut short is refused (:class:`CorruptVideoError`) when what it holds falls short of what it
declares: MP4/MOV frame counts, Matroska/WebM durations. ``allow_truncated=True`` reads the frames
that are there instead, and ``VideoInfo.truncated`` says what is missing.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from fractions import Fraction

import av
import cv2
import numpy as np
from av.video.reformatter import VideoReformatter

from .bitstream import CHECKED_CODECS, h264_reference_frames, is_disposable, is_random_access, nal_length_size
from .errors import CorruptVideoError, ImageNotVideoError, NotAVideoError, VideoNotFoundError
from .seeking import FrameIndex, may_seek

# Decoders whose frames FFmpeg can annotate with motion-vector side data (flags2=+export_mvs).
MOTION_VECTOR_CODECS = frozenset({"h264", "mpeg4", "mpeg2video", "mpeg1video", "msmpeg4v2", "msmpeg4v3", "h263"})
PREDICTED = frozenset({av.video.frame.PictureType.P, av.video.frame.PictureType.B})
# Frames that later P and B frames predict from (x264's reference B frames aside).
REFERENCE_PICTURE_TYPES = frozenset({av.video.frame.PictureType.I, av.video.frame.PictureType.P})
# Pixel formats whose first plane is 8-bit luma that can be read without conversion.
EIGHT_BIT_LUMA_FORMATS = frozenset(
    {"yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p", "nv12", "gray"}
)
# Containers whose header declares the duration but no frame count: their packets are checked against it.
DURATION_FORMATS = frozenset({"matroska", "webm"})
# A file is truncated when its packets end before this share of the declared duration, and more than
# MISSING_FRAMES frames early (timestamps rounded to milliseconds and variable frame rates pass).
COVERED_SHARE = 0.9
MISSING_FRAMES = 2
# Decoding seeks ahead only when that skips at least this many frames (a seek and a decoder flush cost
# about what a few frames do).
SEEK_MIN_SKIPPED = 8


@dataclass(frozen=True)
class VideoInfo:
    """What the selection needs to know about a video before decoding it."""

    path: str
    codec: str
    coded_hw: tuple[int, int]
    rotation: int
    num_frames: int
    frame_count_from: str
    fps: float | None
    pixel_format: str
    truncated: str | None = None  # with allow_truncated: what the file misses (None: complete)
    # H.264: the pictures a frame's vectors may point into (the SPS's max_num_ref_frames; None: not declared).
    reference_frames: int | None = None

    @property
    def display_hw(self) -> tuple[int, int]:
        height, width = self.coded_hw
        return (width, height) if self.rotation % 180 else (height, width)

    @property
    def exports_motion_vectors(self) -> bool:
        return self.codec in MOTION_VECTOR_CODECS

    @property
    def vectors_have_known_references(self) -> bool:
        """Whether each exported vector's reference picture is known. FFmpeg exports only a vector's direction
        (past or future), not which picture it points into: an H.264 stream with several reference frames
        (x264's default, B-frames or not) mixes vectors over one, two or more frames. MPEG-2 and MPEG-4 Part 2
        predict from the last I/P picture only."""
        return self.codec != "h264" or self.reference_frames == 1

    def as_dict(self) -> dict[str, object]:
        info = asdict(self)
        info["display_hw"] = list(self.display_hw)
        return info


@dataclass
class DecodedSample:
    """One distinct sampled frame and its reference (the frame its motion refers to), still as
    decoded frames: turning them into arrays is left to the scoring thread."""

    frame_index: int
    frame: av.VideoFrame
    reference: av.VideoFrame | None
    motion_vectors: np.ndarray | None
    is_intra: bool


@dataclass
class DecodeStats:
    """What a :class:`VideoReader` did: frames the decoder returned, demuxer seeks, packets left undecoded
    (non-reference B frames nobody needs), restarts from the first frame after a surprise, demuxing passes
    over the whole file (to count frames or index them), and the seconds spent opening, scanning and
    decoding (not the time the caller spends between samples)."""

    frames: int = 0
    seeks: int = 0
    skipped: int = 0
    restarts: int = 0
    scans: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, int | float]:
        return {**asdict(self), "seconds": round(self.seconds, 4)}


class _LostTrack(Exception):
    """A decoded frame did not arrive where the frame index expects it: decode from the first frame instead."""


class VideoReader:
    """An open video: ``info`` from the header and the first decoded frame, then one streaming pass.

    The first frame is decoded once and reused by :meth:`samples`, so probing costs no second open.
    A truncated file raises :class:`CorruptVideoError` unless ``allow_truncated``: then its frames are
    those it holds (counted from its packets) and ``info.truncated`` says what is missing.
    ``seek=False`` decodes every frame from the first (the reference the seeking path is tested against).
    """

    def __init__(self, path: str | os.PathLike[str], allow_truncated: bool = False, seek: bool = True) -> None:
        started = time.perf_counter()
        self.path = os.fspath(path)
        self.stats = DecodeStats()
        self._container = _open(self.path)
        self._index: FrameIndex | None = None
        self._needed: set[int] = set()  # with an index: frames that must be decoded (others may be left out)
        self._skipped: set[int] = set()  # frames left out
        try:
            stream = self._stream = self._container.streams.video[0]
            codec = stream.codec_context.name
            self._codec = stream.codec_context.codec.canonical_name  # the bitstream's (AV1 decodes with libdav1d)
            num_frames, source, truncated = int(stream.frames or 0), "header", None
            declares_duration = not DURATION_FORMATS.isdisjoint(self._container.format.name.split(","))
            indexed = seek and self._codec in CHECKED_CODECS
            counted = num_frames <= 0 or allow_truncated or declares_duration or _may_trim(self._container)
            self._length_size = nal_length_size(self._codec, stream.codec_context.extradata)
            # Where the count needs a demuxing pass anyway, the index comes with it; elsewhere it waits for
            # samples() to ask for frames that a seek could skip to.
            self._index_later = indexed and not counted
            found = None  # the index the counting pass made, if any
            if counted:
                packets = self._scan(self._container, declares_duration, indexed)
                truncated = _truncation(self._container, stream, num_frames, packets, declares_duration)
                if truncated is not None and not allow_truncated:
                    raise CorruptVideoError(
                        self.path,
                        f"{truncated}; the file is truncated (allow_truncated=True or --allow-truncated "
                        "selects from the frames it holds)",
                    )
                if packets.presented != num_frames:
                    num_frames, source = packets.presented, "packets"
                found = packets.index if truncated is None else None
                self._container.seek(0)
            if codec in MOTION_VECTOR_CODECS:
                # Slice threading (PyAV's default) only: frame threading exports different vectors run to run.
                stream.codec_context.options = {"flags2": "+export_mvs"}
            self._frames = self._decoded(self._container.demux(stream))
            self._first = self._next_frame(0)
            if self._first is None:
                raise CorruptVideoError(self.path, "no frame could be decoded")
            self._first_pts = self._first.pts
            self._adopt(found, num_frames)
        except BaseException:
            self._container.close()
            raise
        self.info = VideoInfo(
            path=self.path,
            codec=codec,
            coded_hw=(self._first.height, self._first.width),
            rotation=round((self._first.rotation or 0) / 90.0) * 90 % 360,
            num_frames=num_frames,
            frame_count_from=source,
            fps=float(stream.average_rate) if stream.average_rate else None,
            pixel_format=self._first.format.name,
            truncated=truncated,
            reference_frames=h264_reference_frames(stream.codec_context.extradata) if codec == "h264" else None,
        )
        self.stats.seconds += time.perf_counter() - started

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._container.close()

    def _scan(self, container: av.container.InputContainer, every_stream: bool, indexed: bool) -> _Packets:
        self.stats.scans += 1
        stream = container.streams.video[0]
        return _count_packets(self.path, container, stream, every_stream, index_codec=self._codec if indexed else None)

    def _adopt(self, index: FrameIndex | None, num_frames: int) -> None:
        """Place frames by timestamp only where the index holds exactly the frames counted and the decoder's
        first frame carries the first timestamp (else the decoder's timestamps are not the packets')."""
        usable = index is not None and index.num_frames == num_frames and index.frame_of(self._first_pts) == 0
        self._index = index if usable else None

    def _index_now(self) -> None:
        """The deferred scan, on a container of its own so that the decoder keeps its place."""
        self._index_later = False
        try:
            with av.open(self.path) as container:
                packets = self._scan(container, False, True)
        except (av.FFmpegError, CorruptVideoError):
            return  # the decode from the first frame reports what is wrong with the file, if it reaches it
        self._adopt(packets.index, self.info.num_frames)

    def _decoded(self, packets: Iterator[av.Packet]) -> Iterator[av.VideoFrame]:
        """Frames of ``packets``; with an index, the packets of frames nobody needs may be left out."""
        context = self._stream.codec_context
        for packet in packets:
            if self._needed and packet.size and self._skippable(packet):
                self._skipped.add(self._index.frame_of(packet.pts))
                self.stats.skipped += 1
                continue
            for frame in context.decode(packet):
                self.stats.frames += 1
                yield frame

    def _skippable(self, packet: av.Packet) -> bool:
        frame = self._index.frame_of(packet.pts) if self._index is not None else None
        return (
            frame is not None
            and frame not in self._needed
            and is_disposable(self._codec, memoryview(packet), self._length_size)
        )

    def _next_frame(self, index: int) -> av.VideoFrame | None:
        try:
            return next(self._frames, None)
        except av.FFmpegError as error:
            raise CorruptVideoError(
                self.path, f"decoding failed after {index} frames ({error.strerror or error})"
            ) from None

    def samples(self, frame_ids: np.ndarray) -> Iterator[DecodedSample]:
        """Yield each distinct frame of ``frame_ids`` (ascending) with its reference, decoding once what
        they need.

        Raises :class:`CorruptVideoError` if decoding fails or the stream ends before the last one.
        """
        samples = self._samples(frame_ids)
        try:
            while True:
                resumed = time.perf_counter()
                try:
                    sample = next(samples, None)
                finally:
                    self.stats.seconds += time.perf_counter() - resumed
                if sample is None:
                    return
                yield sample
        finally:
            samples.close()

    def _samples(self, frame_ids: np.ndarray) -> Iterator[DecodedSample]:
        wanted = sorted({int(i) for i in frame_ids})
        if self._index_later and may_seek(wanted, SEEK_MIN_SKIPPED):
            self._index_now()
        if self._index is None:
            yield from self._run(0, wanted, set())
            return
        done: set[int] = set()
        self._needed = {*wanted, *(i - 1 for i in wanted)}
        try:
            for start, members in self._index.runs(wanted, SEEK_MIN_SKIPPED):
                yield from self._run(start, members, done)
        except _LostTrack:
            # What was yielded was checked; the rest comes from a plain decode from the first frame.
            self.stats.restarts += 1
            self._index, self._needed, self._first = None, set(), None
            yield from self._run(0, [i for i in wanted if i not in done], done)
        finally:
            self._needed = set()

    def _run(self, start: int, members: list[int], done: set[int]) -> Iterator[DecodedSample]:
        """One continuous decode from frame ``start`` (0: from the first frame) through ``members``."""
        if not members:
            return
        wanted, last_wanted = set(members), members[-1]
        previous = last_reference = None
        for index, frame in self._numbered(start):
            if index in wanted:
                vectors = _motion_vectors(frame)
                predicted = vectors is not None and frame.pict_type in PREDICTED
                reference = last_reference if predicted else previous
                if self._index is not None and index and reference is None and (start or not predicted):
                    raise _LostTrack  # a run that starts at a seek point (an I frame) always has it
                if reference is not None and (reference.width, reference.height) != (frame.width, frame.height):
                    # The frame size changed (a new stream spliced on): vectors measured against a picture of
                    # another size mean nothing here; the reference, rescaled with the frame, is estimated against.
                    vectors = None
                done.add(index)
                yield DecodedSample(
                    frame_index=index,
                    frame=frame,
                    reference=reference,
                    motion_vectors=vectors,
                    is_intra=frame.pict_type == av.video.frame.PictureType.I,
                )
            if index >= last_wanted:
                return
            if frame.pict_type in REFERENCE_PICTURE_TYPES:
                last_reference = frame
            previous = frame if index + 1 in wanted else None

    def _numbered(self, start: int) -> Iterator[tuple[int, av.VideoFrame]]:
        """``(index, frame)`` from frame ``start`` on. Without an index frames are counted from the first;
        with one each is placed by its timestamp and must come in order, none missing but those left out."""
        index = self._index
        if start:
            self._seek_to(start)
        elif self._first is None:  # the decoder has moved on: back to the first frame
            self._rewind()
        if index is None:
            frame, number = self._first, 0
            self._first = None
            while frame is not None:
                yield number, frame
                number += 1
                frame = self._next_frame(number)
            raise CorruptVideoError(
                self.path,
                f"the stream ended after {number} decodable frames but declares {self.info.num_frames}; "
                "the file is truncated or corrupt",
            )
        frame, expected, start_pts = self._first, start, int(index.pts[start])
        self._first = None
        while frame is not None:
            if not (start and frame.pts is not None and frame.pts < start_pts):  # else: decoded on the way
                number = index.frame_of(frame.pts)
                if number is None or number < expected or not self._skipped.issuperset(range(expected, number)):
                    raise _LostTrack
                yield number, frame
                expected = number + 1
            frame = self._next_frame(expected)
        raise _LostTrack  # the stream ended early: the plain decode says how

    def _rewind(self) -> None:
        self._container.seek(0)
        self._frames = self._decoded(self._container.demux(self._stream))
        self._first = self._next_frame(0)
        if self._first is None:
            raise CorruptVideoError(self.path, "no frame could be decoded")

    def _seek_to(self, start: int) -> None:
        """Restart decoding at seek point ``start``'s packet, or at a key frame before it: the frames before
        ``start`` are then decoded on the way and dropped. ``_first`` becomes the first frame decoded.

        Demuxers seek by presentation (MP4, Matroska) or decoding timestamps (MPEG-TS): the first is tried,
        then the second if it landed past the packet."""
        index, self._first = self._index, None
        self._skipped.clear()  # what a run left out matters within that run only
        target = index.decode_position(int(index.pts[start]))
        if target is None:
            raise _LostTrack
        for timestamp in dict.fromkeys((int(index.pts[start]), index.seek_dts_of(start))):
            if timestamp is None:
                continue
            try:
                self._container.seek(timestamp, stream=self._stream, backward=True)
            except av.FFmpegError:
                break
            self.stats.seeks += 1
            packets = self._container.demux(self._stream)
            try:
                landing = next((packet for packet in packets if packet.size), None)
            except av.FFmpegError:
                break  # the plain decode reports what is wrong with the file, if it reaches it
            position = None if landing is None else index.decode_position(landing.pts)
            if position is not None and position <= target:
                self._frames = self._decoded(_chain([landing], packets))
                self._first = self._next_frame(start)
                return
        raise _LostTrack  # the demuxer landed past the seek point, or on a packet the scan did not see


def _chain(*parts: Iterator[av.Packet] | list[av.Packet]) -> Iterator[av.Packet]:
    for part in parts:
        yield from part


def _open(path: str) -> av.container.InputContainer:
    if not os.path.exists(path):
        raise VideoNotFoundError(path, "no such file")
    mode = os.stat(path).st_mode
    if stat.S_ISDIR(mode):
        raise NotAVideoError(path, "is a directory, not a video file")
    kind = "a pipe" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else None
    kind = "a character device" if stat.S_ISCHR(mode) else kind
    if kind is not None:  # before opening: reading a pipe would consume the stream, and it cannot be rewound
        raise NotAVideoError(
            path, f"is {kind}, not a file; videos are read from seekable files (save the stream to a file first)"
        )
    try:
        container = av.open(path)
    except av.FFmpegError as error:
        raise NotAVideoError(path, f"cannot be opened as a video ({error.strerror or error})") from None
    if not container.streams.video:
        container.close()
        raise NotAVideoError(path, "has no video stream")
    if _is_image(container):
        container.close()
        raise ImageNotVideoError(
            path, "is an image, not a video: encode it as an image (`onevision encode`, --mode auto or image)"
        )
    return container


def _is_image(container: av.container.InputContainer) -> bool:
    """Whether FFmpeg found a still picture, by what the file holds (not its name): its demuxer reads one
    image (``image2``, ``jpeg_pipe``, ``png_pipe``, ...), or it is a GIF of one frame (a GIF of more is a clip)."""
    demuxer = container.format.name
    if demuxer == "image2" or demuxer.endswith("_pipe"):
        return True
    return demuxer == "gif" and container.streams.video[0].frames <= 1


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


def _may_trim(container: av.container.InputContainer) -> bool:
    """MP4 / MOV edit lists can hide frames that the header still counts (a trimmed or phone video)."""
    return "mov" in container.format.name.split(",")


@dataclass(frozen=True)
class _Packets:
    """What a demuxing pass found: the video packets, how long the file's streams run, and (when asked for)
    the frame index."""

    total: int  # video packets holding data
    presented: int  # of those, the ones an edit list does not discard
    seconds: float | None  # first timestamp to the end of the last packet, over the streams demuxed
    index: FrameIndex | None = None


def _count_packets(
    path: str,
    container: av.container.InputContainer,
    stream: av.VideoStream,
    every_stream: bool,
    index_codec: str | None = None,
) -> _Packets:
    """Demux (no decoding) the video stream, or every stream: a file's duration covers them all. With
    ``index_codec``, also index the frames (their timestamps, and which key frames may start a decode)."""
    total = presented = 0
    spans: dict[int, list[int]] = {}  # stream index -> [first timestamp, last timestamp + duration]
    time_bases: dict[int, Fraction] = {}
    packet_pts: list[int | None] = []
    packet_dts: list[int | None] = []
    shown: list[bool] = []
    random_access: list[bool] = []
    length_size = nal_length_size(index_codec, stream.codec_context.extradata) if index_codec else None
    try:
        for packet in container.demux() if every_stream else container.demux(stream):
            if not packet.size:
                continue
            number, pts = packet.stream.index, packet.pts
            if number == stream.index:
                total += 1
                hidden = packet.is_discard
                presented += not hidden
                if index_codec is not None:
                    packet_pts.append(pts)
                    packet_dts.append(packet.dts)
                    shown.append(not hidden)
                    random_access.append(
                        packet.is_keyframe and is_random_access(index_codec, bytes(packet), length_size)
                    )
            timestamp = pts if pts is not None else packet.dts
            if timestamp is not None:
                # Integers per stream, in seconds once at the end: a Fraction per packet costs more than demuxing.
                last = timestamp + (packet.duration or 0)
                span = spans.get(number)
                if span is None:
                    spans[number] = [timestamp, last]
                    time_bases[number] = packet.time_base
                else:
                    span[0], span[1] = min(span[0], timestamp), max(span[1], last)
    except av.FFmpegError as error:
        raise CorruptVideoError(path, f"cannot read the video stream ({error.strerror or error})") from None
    if presented == 0:
        raise CorruptVideoError(path, "the video stream holds no frames")
    index = FrameIndex.build(packet_pts, packet_dts, shown, random_access) if index_codec is not None else None
    seconds = [
        (float(first * time_bases[i]), float(last * time_bases[i]))
        for i, (first, last) in spans.items()
        if time_bases[i]
    ]
    duration = max(last for _, last in seconds) - min(first for first, _ in seconds) if seconds else None
    return _Packets(total, presented, duration, index)


def _truncation(
    container: av.container.InputContainer,
    stream: av.VideoStream,
    declared_frames: int,
    packets: _Packets,
    declares_duration: bool,
) -> str | None:
    """What a cut-short file misses, or None: fewer packets than the header's frame count (MP4/MOV edit
    lists hide frames but still hold their packets), or packets ending clearly before the declared duration."""
    if declared_frames > 0 and packets.total < declared_frames:
        return f"the stream holds {packets.total} frames but its header declares {declared_frames}"
    if not declares_duration or not container.duration or packets.seconds is None:
        return None
    declared = container.duration / av.time_base
    rate = stream.average_rate or stream.guessed_rate
    frame_seconds = 1 / float(rate) if rate else packets.seconds / packets.total
    if packets.seconds < COVERED_SHARE * declared and declared - packets.seconds > MISSING_FRAMES * frame_seconds:
        return (
            f"its packets ({packets.total} video frames) cover {packets.seconds:.2f} s "
            f"but the container declares {declared:.2f} s"
        )
    return None


def luma_of(frame: av.VideoFrame) -> np.ndarray:
    """The frame's 8-bit luma plane ``[H, W]`` (a view where the pixel format allows)."""
    if frame.format.name in EIGHT_BIT_LUMA_FORMATS:
        plane = frame.planes[0]
        rows = np.frombuffer(plane, np.uint8, count=plane.height * plane.line_size)
        return rows.reshape(plane.height, plane.line_size)[:, : plane.width]
    return frame.to_ndarray(format="gray")


def luma_at(frame: av.VideoFrame, hw: tuple[int, int]) -> np.ndarray:
    """Luma downscaled to ``hw``: area averaging by the largest whole factor (OpenCV's fast path), then bilinear."""
    plane = luma_of(frame)
    if plane.shape == hw:
        return np.ascontiguousarray(plane)
    factor = min(plane.shape[0] // hw[0], plane.shape[1] // hw[1])
    if factor >= 2:
        plane = cv2.resize(plane, None, fx=1 / factor, fy=1 / factor, interpolation=cv2.INTER_AREA)
    return cv2.resize(plane, (hw[1], hw[0]), interpolation=cv2.INTER_LINEAR)


def rgb_at(frame: av.VideoFrame, hw: tuple[int, int], reformatter: VideoReformatter) -> np.ndarray:
    """RGB ``[h, w, 3]`` uint8 at ``hw`` (swscale area filter; reuse ``reformatter`` across frames)."""
    if (frame.height, frame.width) == hw:
        return frame.to_ndarray(format="rgb24")
    return reformatter.reformat(frame, width=hw[1], height=hw[0], format="rgb24", interpolation="AREA").to_ndarray()


def _motion_vectors(frame: av.VideoFrame) -> np.ndarray | None:
    side_data = frame.side_data.get("MOTION_VECTORS")
    return None if side_data is None else side_data.to_ndarray()
