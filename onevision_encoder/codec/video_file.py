"""A video file before decoding: opening it (what is not a video is refused, naming the file), what the
selection needs to know of it (:class:`VideoInfo`), and a demuxing pass that counts its frames, indexes them
for seeking and finds a file cut short.

A file is cut short when what it holds falls short of what it declares: MP4/MOV frame counts, Matroska/WebM
durations.
"""

from __future__ import annotations

import os
import stat
from dataclasses import asdict, dataclass
from fractions import Fraction

import av

from .bitstream import is_random_access, nal_length_size
from .errors import CorruptVideoError, ImageNotVideoError, NotAVideoError, VideoNotFoundError
from .seeking import FrameIndex

# Decoders whose frames FFmpeg can annotate with motion-vector side data (flags2=+export_mvs).
MOTION_VECTOR_CODECS = frozenset({"h264", "mpeg4", "mpeg2video", "mpeg1video", "msmpeg4v2", "msmpeg4v3", "h263"})
# Containers whose header declares the duration but no frame count: their packets are checked against it.
DURATION_FORMATS = frozenset({"matroska", "webm"})
# A file is truncated when its packets end before this share of the declared duration, and more than
# MISSING_FRAMES frames early (timestamps rounded to milliseconds and variable frame rates pass).
COVERED_SHARE = 0.9
MISSING_FRAMES = 2


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


def open_video(path: str) -> av.container.InputContainer:
    """``path``'s container, open; a missing file, a folder, a pipe or device, what FFmpeg cannot open, a file
    without a video stream and a still picture are refused with their :class:`~.errors.VideoError`."""
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


def may_trim(container: av.container.InputContainer) -> bool:
    """MP4 / MOV edit lists can hide frames that the header still counts (a trimmed or phone video)."""
    return "mov" in container.format.name.split(",")


@dataclass(frozen=True)
class PacketScan:
    """What a demuxing pass found: the video packets, how long the file's streams run, and (when asked for)
    the frame index."""

    total: int  # video packets holding data
    presented: int  # of those, the ones an edit list does not discard
    seconds: float | None  # first timestamp to the end of the last packet, over the streams demuxed
    index: FrameIndex | None = None


def count_packets(
    path: str,
    container: av.container.InputContainer,
    stream: av.VideoStream,
    every_stream: bool,
    index_codec: str | None = None,
) -> PacketScan:
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
    return PacketScan(total, presented, duration, index)


def truncation(
    container: av.container.InputContainer,
    stream: av.VideoStream,
    declared_frames: int,
    packets: PacketScan,
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
