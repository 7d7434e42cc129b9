"""Streaming PyAV reader: decodes what the sampled frames need, once, and keeps only them.

For each sampled frame it yields the decoded frame, its reference frame and the codec's motion
vectors when the decoder exports them. The reference is the frame the vectors point to: the
previous frame in a stream without B-frames; with B-frames, the last I or P frame shown before it
(a P frame's vectors skip the B frames between I/P frames, and a B frame's past vectors point to
that I/P frame too). Frames without codec vectors (every frame, when the caller estimates all motion)
take the frame shown ``estimate_baseline`` frames before them (fewer at the video's start), against which
their motion is estimated. Nothing else is kept, so memory stays bounded whatever the video's length.

Cost follows what is sampled (streams of the codecs :mod:`.bitstream` checks whose packets all carry distinct
timestamps): frames are placed by their timestamps from a packet scan (:mod:`.seeking`; made with the frame
count's own pass where there is one, else only when the sampled frames leave gaps a seek could skip),
decoding seeks ahead to the last random access point before a sampled frame when that skips frames (a clip
at the end of a long video, or samples further apart than the GOP), and H.264 non-reference B frames that
are neither sampled nor one of the ``estimate_baseline`` frames before a sampled one are not decoded. The
frames, vectors and references are bitwise those of a decode from the first frame: every decoded frame is
checked to arrive at its expected index, and on any surprise the reader decodes from the first frame instead
(``stats.restarts``).

Decoding stays slice-threaded (PyAV's default). Frame threading exports different vectors run to run for
H.264 B frames (not P frames) and gives bit-exact pixels for every codec, but it costs about a third more
CPU time, and in a selection the scoring threads already keep the other core busy: measured on 2 cores,
frame threads made selections slower (BBB 657 vs 581 ms, 64 frames of a 10-minute video 1.71 vs 1.23 s).

A file cut short (:mod:`.video_file`) is refused (:class:`CorruptVideoError`); ``allow_truncated=True`` reads
the frames that are there instead, and ``VideoInfo.truncated`` says what is missing.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import av
import numpy as np

from .bitstream import CHECKED_CODECS, h264_reference_frames, is_disposable, nal_length_size
from .errors import CorruptVideoError
from .seeking import FrameIndex, may_seek
from .video_file import (
    DURATION_FORMATS,
    MOTION_VECTOR_CODECS,
    PacketScan,
    VideoInfo,
    count_packets,
    may_trim,
    open_video,
    truncation,
)

PREDICTED = frozenset({av.video.frame.PictureType.P, av.video.frame.PictureType.B})
# Frames that later P and B frames predict from (x264's reference B frames aside).
REFERENCE_PICTURE_TYPES = frozenset({av.video.frame.PictureType.I, av.video.frame.PictureType.P})
# Decoding seeks ahead only when that skips at least this many frames (a seek and a decoder flush cost
# about what a few frames do).
SEEK_MIN_SKIPPED = 8


@dataclass
class DecodedSample:
    """One distinct sampled frame and its reference (the frame its motion refers to), still as
    decoded frames: turning them into arrays is left to the scoring thread."""

    frame_index: int
    frame: av.VideoFrame
    reference: av.VideoFrame | None
    reference_gap: int  # frames from the reference to this frame (0: no reference)
    previous: av.VideoFrame | None  # without vectors: the frame just before, where the reference lies further back
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
        self._container = open_video(self.path)
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
            counted = num_frames <= 0 or allow_truncated or declares_duration or may_trim(self._container)
            self._length_size = nal_length_size(self._codec, stream.codec_context.extradata)
            # Where the count needs a demuxing pass anyway, the index comes with it; elsewhere it waits for
            # samples() to ask for frames that a seek could skip to.
            self._index_later = indexed and not counted
            found = None  # the index the counting pass made, if any
            if counted:
                packets = self._scan(self._container, declares_duration, indexed)
                truncated = truncation(self._container, stream, num_frames, packets, declares_duration)
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

    def _scan(self, container: av.container.InputContainer, every_stream: bool, indexed: bool) -> PacketScan:
        self.stats.scans += 1
        stream = container.streams.video[0]
        return count_packets(self.path, container, stream, every_stream, index_codec=self._codec if indexed else None)

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

    def samples(
        self, frame_ids: np.ndarray, estimate_baseline: int = 1, vectors: bool = True
    ) -> Iterator[DecodedSample]:
        """Yield each distinct frame of ``frame_ids`` (ascending) with its reference, decoding once what
        they need. A frame without codec vectors takes the frame ``estimate_baseline`` frames before it as its
        reference; ``vectors=False`` leaves every frame without (for a caller that estimates all motion).

        Raises :class:`CorruptVideoError` if decoding fails or the stream ends before the last one.
        """
        samples = self._samples(frame_ids, estimate_baseline, vectors)
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

    def _samples(self, frame_ids: np.ndarray, baseline: int, vectors: bool) -> Iterator[DecodedSample]:
        wanted = sorted({int(i) for i in frame_ids})
        if self._index_later and may_seek(wanted, SEEK_MIN_SKIPPED, baseline):
            self._index_now()
        if self._index is None:
            yield from self._run(0, wanted, set(), baseline, vectors)
            return
        done: set[int] = set()
        self._needed = {i - back for i in wanted for back in range(baseline + 1)}
        try:
            for start, members in self._index.runs(wanted, SEEK_MIN_SKIPPED, baseline):
                yield from self._run(start, members, done, baseline, vectors)
        except _LostTrack:
            # What was yielded was checked; the rest comes from a plain decode from the first frame.
            self.stats.restarts += 1
            self._index, self._needed, self._first = None, set(), None
            yield from self._run(0, [i for i in wanted if i not in done], done, baseline, vectors)
        finally:
            self._needed = set()

    def _run(
        self, start: int, members: list[int], done: set[int], baseline: int, use_vectors: bool
    ) -> Iterator[DecodedSample]:
        """One continuous decode from frame ``start`` (0: from the first frame) through ``members``."""
        if not members:
            return
        wanted, last_wanted = set(members), members[-1]
        # The frames decoded last, with their indices: those a frame without vectors may take as reference
        # (the frames a run must decode before each sampled one are never left out, so they are consecutive).
        earlier: deque[tuple[int, av.VideoFrame]] = deque(maxlen=baseline)
        last_reference: tuple[int, av.VideoFrame] | None = None
        for index, frame in self._numbered(start):
            if index in wanted:
                vectors = _motion_vectors(frame) if use_vectors else None
                predicted = vectors is not None and frame.pict_type in PREDICTED
                before = last_reference if predicted else (earlier[0] if earlier else None)
                reference = None if before is None else before[1]
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
                    reference_gap=0 if before is None else index - before[0],
                    previous=None if predicted or before is None or index - before[0] == 1 else earlier[-1][1],
                    motion_vectors=vectors,
                    is_intra=frame.pict_type == av.video.frame.PictureType.I,
                )
            if index >= last_wanted:
                return
            if frame.pict_type in REFERENCE_PICTURE_TYPES:
                last_reference = (index, frame)
            earlier.append((index, frame))

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


def _motion_vectors(frame: av.VideoFrame) -> np.ndarray | None:
    side_data = frame.side_data.get("MOTION_VECTORS")
    return None if side_data is None else side_data.to_ndarray()
