"""LLaVA-OneVision-2's codec video input, made with this package's selection: a drop-in for
``lmms_video_utils.fetch_codec_video`` and ``process_video_info`` (lmms-video-utils 0.1.0, the format lmms-engine's
``llava_onevision2`` processor reads).

Same keywords, same output fields, dtypes, layout and canvas geometry for the same configuration: the sampled
frames are split into groups; each group gives one whole frame (its first, the "I-canvas") and
``images_per_group - 1`` canvases packed with the ``patch * block``-pixel blocks that score highest in the rest of
the group, each block's patches recorded by (source frame, patch row, patch column), ``-1`` for empty slots.
What differs is how blocks are scored and how the video is read: the codec signals of :func:`select_patches`
(motion vectors or optical flow against each frame's reference, camera compensation, the motion-compensated
residual), decoding only what the sampled frames need (seeking), and keeping only the sampled frames at canvas
size, so memory does not grow with the video's length. ``score_mode`` is accepted and checked but every mode
scores with those signals; ``gop_mode="bitcost"`` splits the groups by the sampled frames' packet sizes (PyAV
exposes no per-block bit cost): each frame's own packet, where lmms-video-utils 0.1.0 takes the packet whose
decoding returned the frame (a later one under B-frames or frame threading), so its groups may differ.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .errors import SelectionError
from .options import OptionError, SelectionOptions

SCORE_MODES = ("framediff", "mvwarp", "mvwarp_edge")
GOP_MODES = ("uniform", "bitcost")
BACKENDS = ("auto", "torchcodec", "pyav")
BITCOST_SCORE_MODES = ("additive", "multiplicative", "off")
# qwen-vl-utils' video keys in a chat message -> CodecConfig fields
MESSAGE_KEYS = {
    "video_start": "start_time",
    "video_end": "end_time",
    "fps": "target_fps",
    "nframes": "max_frames",
    "max_pixels": "max_pixels",
    "min_pixels": "min_pixels",
}


@dataclass
class CodecConfig:
    """lmms-video-utils' configuration: its fields and defaults (``device``: where the output tensors go)."""

    target_canvas: int = 32
    group_size: int = 32
    images_per_group: int = 4
    patch: int = 14
    block: int = 2
    max_pixels: int = 150_000
    min_group_frames: int = 8
    max_group_frames: int = 64
    score_mode: str = "framediff"
    mv_edge_weight: float = 0.5
    gop_mode: str = "uniform"
    bitcost_score_weight: float = 0.5
    bitcost_score_mode: str = "additive"
    bitcost_bin_seconds: float = 0.0
    backend: str = "auto"
    device: str = "cpu"
    start_time: float | None = None
    end_time: float | None = None
    target_fps: float | None = None
    max_frames: int | None = None
    min_pixels: int | None = None

    def validate(self) -> None:
        """Raise :class:`OptionError` (a ``ValueError`` naming the field) for a value that cannot be used."""
        for name in ("target_canvas", "images_per_group", "group_size", "patch", "block", "max_pixels"):
            if getattr(self, name) <= 0:
                raise OptionError(name, f"must be > 0, got {getattr(self, name)}")
        if self.target_canvas % self.images_per_group:
            raise OptionError("target_canvas", f"must be a multiple of images_per_group={self.images_per_group}")
        if self.group_size % self.images_per_group:
            raise OptionError("group_size", f"must be a multiple of images_per_group={self.images_per_group}")
        if self.min_group_frames > self.max_group_frames:
            raise OptionError("min_group_frames", f"must be <= max_group_frames={self.max_group_frames}")
        for name, choices in (
            ("score_mode", SCORE_MODES),
            ("gop_mode", GOP_MODES),
            ("backend", BACKENDS),
            ("bitcost_score_mode", BITCOST_SCORE_MODES),
        ):
            if getattr(self, name) not in choices:
                raise OptionError(name, f"must be one of {', '.join(choices)}; got {getattr(self, name)!r}")
        for name in ("bitcost_score_weight", "bitcost_bin_seconds", "target_fps", "max_frames"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise OptionError(name, f"must be >= 0, got {value}")
        if self.bitcost_bin_seconds > 0 and self.gop_mode == "bitcost":
            raise OptionError("bitcost_bin_seconds", "> 0 is not supported (nor by lmms-video-utils 0.1.0)")
        if self.start_time is not None and self.end_time is not None and self.start_time >= self.end_time:
            raise OptionError("start_time", f"must be before end_time={self.end_time}, got {self.start_time}")
        if self.min_pixels is not None and self.min_pixels > self.max_pixels:
            raise OptionError("min_pixels", f"must be <= max_pixels={self.max_pixels}, got {self.min_pixels}")

    @property
    def block_px(self) -> int:
        return self.patch * self.block

    def num_sampled_frames(self, duration: float | None) -> int:
        """Frames to sample: ``target_canvas / images_per_group`` groups of ``group_size``, or ``target_fps`` over the
        clip; at most ``max_frames``; rounded down to whole groups, at least one."""
        if self.target_fps:
            if self.end_time is None and duration is None:
                raise OptionError("target_fps", "needs end_time or a video whose duration is known")
            end = self.end_time if self.end_time is not None else duration
            wanted = round(max(0.0, float(end) - float(self.start_time or 0.0)) * self.target_fps)
        else:
            wanted = self.target_canvas // self.images_per_group * self.group_size
        if self.max_frames is not None:
            wanted = min(wanted, self.max_frames)
        whole = wanted // self.group_size * self.group_size
        if whole < wanted:
            warnings.warn(f"{wanted} frames rounded down to whole groups of {self.group_size}", stacklevel=3)
        return max(whole, self.group_size)


@dataclass
class CodecVideoOutput:
    """lmms-video-utils' output: ``canvases`` uint8 ``[N, 3, H, W]``; ``patch_positions`` int64 ``[N*Hp*Wp, 3]``
    (source frame index, patch row, patch column; raster order per canvas; ``-1`` rows for empty slots);
    ``gop_ids`` int64 ``[N]``; ``source_pts`` float32 ``[N]`` (seconds: each canvas's group start); ``fps``;
    ``n_groups``."""

    canvases: Any
    patch_positions: Any
    gop_ids: Any
    source_pts: Any
    fps: float
    n_groups: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def canvas_blocks(config: CodecConfig, source_hw: tuple[int, int]) -> tuple[int, int]:
    """Canvas size in blocks (rows, columns): as many ``block_px`` blocks as ``max_pixels`` holds, in the frame's
    aspect ratio."""
    budget = max(1, config.max_pixels // config.block_px**2)
    height, width = source_hw
    ratio = width / height
    rows = max(1, round(math.sqrt(budget / ratio)))
    cols = max(1, round(rows * ratio))
    while rows * cols > budget and cols > 1:
        cols -= 1
    while rows * cols > budget and rows > 1:
        rows -= 1
    return rows, cols


def uniform_groups(count: int, config: CodecConfig) -> list[tuple[int, int]]:
    """``target_canvas / images_per_group`` consecutive groups of near-equal size (at most ``max_group_frames``)."""
    groups, start = [], 0
    wanted = config.target_canvas // config.images_per_group
    base, extra = divmod(count, wanted)
    for index in range(wanted):
        size = min(base + (index < extra), config.max_group_frames)
        if size and start < count:
            groups.append((start, min(count, start + size)))
            start = groups[-1][1]
    return groups


def bitcost_groups(packet_bytes: list[int], intra: list[bool], config: CodecConfig) -> list[tuple[int, int]]:
    """Groups closed where the coded bytes of their predicted frames reach an equal share of the clip's, between
    ``min_group_frames`` and ``max_group_frames`` long, each cut moved (within half the minimum length) to the
    frame that costs least."""
    cost = [0 if is_intra else size for size, is_intra in zip(packet_bytes, intra, strict=True)]
    total, count = sum(cost), len(cost)
    if total <= 0:
        return uniform_groups(count, config)
    share = total / max(1, config.target_canvas // config.images_per_group)
    shortest = max(1, config.min_group_frames)
    longest = max(shortest, config.max_group_frames)
    window = max(1, shortest // 2)
    groups, start = [], 0
    while start < count:
        spent, cut = 0, None
        for index in range(start, count):
            spent += cost[index]
            length = index - start + 1
            if length >= longest or (length >= shortest and spent >= share):
                cut = index
                break
        if cut is None:
            groups.append((start, count))
            break
        low = max(start, start + shortest - 1, cut - window)
        high = min(count - 1, start + longest - 1, cut + window)
        if high >= low:
            cut = min(range(low, high + 1), key=lambda i: (cost[i], abs(i - cut)))
        groups.append((start, cut + 1))
        start = cut + 1
    return groups


def fetch_codec_video(path: str | os.PathLike[str], **config: Any) -> CodecVideoOutput:
    """Codec canvases of a video, as ``lmms_video_utils.fetch_codec_video(path, **config)`` returns them.

    Raises:
        OptionError: a configuration value that cannot be used (``TypeError`` for an unknown keyword).
        VideoError: (a subclass naming the file) a missing, unreadable or corrupt video, or a time range outside it.
    """
    import torch

    from .geometry import FrameGeometry
    from .reader import VideoReader
    from .select import resolve_motion, saliency_config, score_frames

    settings = CodecConfig(**config)
    settings.validate()
    # The encoder preset's reading of the signals; a canvas is packed whole, so no centre prior.
    options = SelectionOptions.resolve(preset="encoder", centre_prior=0.0)
    with VideoReader(path) as reader:
        info = reader.info
        fps = info.fps or 30.0
        frame_ids = _sampled_frames(info.path, info.num_frames, fps, settings)
        block_px = settings.block_px
        rows, cols = canvas_blocks(settings, info.display_hw)
        # lmms-video-utils 0.1.0 sizes its canvases by the same rule again, from the frames already resized to the
        # first size (a block more or less at some aspect ratios); its geometry is the contract.
        rows, cols = canvas_blocks(settings, (rows * block_px, cols * block_px))
        canvas_hw = (rows * block_px, cols * block_px)
        geometry = FrameGeometry(info.display_hw, canvas_hw, canvas_hw, (0, 0), block_px)
        motion, baseline = resolve_motion(options, info)
        config = saliency_config(options)
        scored, frames = score_frames(reader, frame_ids, geometry, config, motion, baseline, True, False)
    if settings.gop_mode == "bitcost":
        groups = bitcost_groups(*packet_sizes(info.path, frame_ids), settings)
    else:
        groups = uniform_groups(len(frame_ids), settings)
    canvases, positions, group_ids, starts = [], [], [], []
    for group, (start, end) in enumerate(groups):
        if end - start < 2:
            continue
        members = [int(i) for i in frame_ids[start:end]]
        made = _pack_group(members, frames, {i: scored[i].patch_scores for i in members}, settings, (rows, cols))
        canvases.extend(made[0])
        positions.extend(made[1])
        group_ids.extend([group] * len(made[0]))
        starts.extend([members[0] / fps] * len(made[0]))
    if not canvases:
        raise SelectionError(info.path, f"too short for codec canvases: {len(frame_ids)} sampled frames")
    device = torch.device(settings.device)
    return CodecVideoOutput(
        canvases=torch.from_numpy(np.stack(canvases)).permute(0, 3, 1, 2).contiguous().to(device),
        patch_positions=torch.from_numpy(np.concatenate(positions)).to(device),
        gop_ids=torch.tensor(group_ids, dtype=torch.int64, device=device),
        source_pts=torch.tensor(starts, dtype=torch.float32, device=device),
        fps=float(fps),
        n_groups=len(groups),
    )


def _sampled_frames(path: str, total: int, fps: float, settings: CodecConfig) -> np.ndarray:
    """``round(linspace(first, last, n))`` over the frames of ``[start_time, end_time)``, or all of them."""
    wanted = settings.num_sampled_frames(total / fps)
    first = round(settings.start_time * fps) if settings.start_time is not None else 0
    end = min(total, round(settings.end_time * fps)) if settings.end_time is not None else total
    if first >= total:
        raise SelectionError(path, f"start_time={settings.start_time} is past the video's end ({total / fps:.3f} s)")
    if end <= first:
        raise SelectionError(path, f"no frame between {settings.start_time} s and {settings.end_time} s")
    if wanted >= end - first:
        return np.arange(first, end)
    return np.rint(np.linspace(first, end - 1, wanted)).astype(np.int64)


def packet_sizes(path: str, frame_ids: np.ndarray) -> tuple[list[int], list[bool]]:
    """Bytes and key-frame flag of each sampled frame's packet (packets in presentation order, without decoding)."""
    import av

    with av.open(path) as container:
        packets = [
            (packet.pts, packet.size, packet.is_keyframe)
            for packet in container.demux(video=0)
            if packet.size and packet.pts is not None
        ]
    packets.sort()
    chosen = [packets[min(int(i), len(packets) - 1)] for i in frame_ids]
    return [size for _, size, _ in chosen], [key for _, _, key in chosen]


def _pack_group(
    members: list[int],
    frames: dict[int, np.ndarray],
    scores: dict[int, np.ndarray],
    settings: CodecConfig,
    blocks_hw: tuple[int, int],
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """A group's canvases (``[H, W, 3]``) and their patch positions: its first frame whole, then one canvas of the
    best blocks of each of ``images_per_group - 1`` consecutive ranges of the other frames."""
    rows, cols = blocks_hw
    block, block_px = settings.block, settings.block_px
    patch_rows, patch_cols = rows * block, cols * block
    first = members[0]
    whole = np.stack(
        np.broadcast_arrays(first, *np.meshgrid(np.arange(patch_rows), np.arange(patch_cols), indexing="ij")), -1
    ).reshape(-1, 3)
    canvases, positions = [frames[first]], [whole.astype(np.int64)]
    others = members[1:]
    ranges = settings.images_per_group - 1
    offsets = np.arange(block)
    for part in range(ranges):
        chosen = others[round(part * len(others) / ranges) : round((part + 1) * len(others) / ranges)]
        canvas = np.zeros_like(frames[first])
        where = np.full((patch_rows, patch_cols, 3), -1, dtype=np.int64)
        if chosen:
            stacked = np.stack([scores[i] for i in chosen]).reshape(-1)
            # The best blocks (ties to the earlier frame and block), laid out in (frame, row, column) order.
            best = np.sort(np.argsort(-stacked, kind="stable")[: rows * cols])
            for slot, flat in enumerate(best):
                frame_slot, cell = divmod(int(flat), rows * cols)
                (block_row, block_col), (row, col) = divmod(cell, cols), divmod(slot, cols)
                source = frames[chosen[frame_slot]]
                canvas[row * block_px : (row + 1) * block_px, col * block_px : (col + 1) * block_px] = source[
                    block_row * block_px : (block_row + 1) * block_px, block_col * block_px : (block_col + 1) * block_px
                ]
                target = where[row * block : (row + 1) * block, col * block : (col + 1) * block]
                target[..., 0] = chosen[frame_slot]
                target[..., 1] = block_row * block + offsets[:, None]
                target[..., 2] = block_col * block + offsets[None, :]
        canvases.append(canvas)
        positions.append(where.reshape(-1, 3))
    return canvases, positions


def process_video_info(
    messages: list[dict[str, Any]], video_backend: str = "codec", **defaults: Any
) -> tuple[list[Any], list[CodecVideoOutput]]:
    """``(image_inputs, video_inputs)`` of a chat (qwen-vl-utils' message format): every ``video`` (or
    ``video_url``) item of every message's content made into codec canvases, its own keys (``video_start``,
    ``video_end``, ``fps``, ``nframes``, ``max_pixels``, ``min_pixels``) over ``defaults``. Images are not read:
    the first list is empty, as lmms-video-utils'."""
    if video_backend != "codec":
        raise OptionError("video_backend", f"must be 'codec', got {video_backend!r}")
    videos = []
    for message in messages:
        content = message.get("content")
        for item in content if isinstance(content, list) else []:
            if not isinstance(item, dict) or item.get("type") not in ("video", "video_url"):
                continue
            source = item.get("video") or item.get("video_url")
            if isinstance(source, dict):
                source = source.get("url") or source.get("path")
            if not isinstance(source, str):
                continue
            own = {field: item[key] for key, field in MESSAGE_KEYS.items() if key in item}
            videos.append(fetch_codec_video(_local_path(source), **{**defaults, **own}))
    return [], videos


def _local_path(source: str) -> str:
    return source[len("file://") :] if source.startswith("file://") else source
