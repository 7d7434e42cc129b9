"""``select_patches``: video file -> frames and codec signals -> saliency -> K patches."""

from __future__ import annotations

import os
import time
from collections import Counter, deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
from av.video.reformatter import VideoReformatter

from .codec_selection import CodecSelection
from .errors import SelectionError
from .frame_arrays import luma_at, rgb_at
from .frames import sample_frame_ids
from .geometry import FrameGeometry, plan_geometry
from .options import UNSET, SelectionOptions
from .reader import DecodedSample, VideoReader
from .saliency import FrameScores, SaliencyConfig, score_frame
from .top_k import is_static, select_top_k, spread_frames
from .video_file import VideoInfo

__all__ = ["compute_codec_visible_indices", "select_patches"]


PENDING_FRAMES = 4  # scored frames in flight: bounds memory while decoding overlaps scoring
RECENT_PLANES = 3  # luma planes kept for reuse as references
# Scoring costs more than decoding (at 720p about 2x an H.264 decode's CPU time): two scoring threads keep
# two cores busy beside the decoder.
SCORING_THREADS = 2


def select_patches(
    path: str | os.PathLike[str],
    preset: str = "encoder",
    num_patches: int | None = None,
    num_frames: int = 64,
    patch_size: int | None = None,
    size: int | None = None,
    mv_compensate: str | None = None,
    anchors: str | None = None,
    gop_size: int = 16,
    motion: str = "auto",
    fusion: str = "weighted",
    fusion_weights: tuple[float, float] = (1.0, 1.0),
    inconsistency: bool = False,
    residual: str = "abs",
    centre_prior: float | None = None,
    static_threshold: float | None = UNSET,
    keep_frames: bool = False,
    frame_range: tuple[int, int] | None = None,
    allow_truncated: bool = False,
    mv_precision: str | None = None,
) -> CodecSelection:
    """Choose the K most informative patches of ``num_frames`` frames sampled from a video.

    Args:
        path: Any video FFmpeg (PyAV) can read.
        preset: ``encoder`` (224 crop, p=14, K=2048, similarity, centre prior, anchors ``gop``) or
            ``lmm`` (576 padded, p=16, K=10368, median, anchors ``first``). Every value is overridable.
        num_patches: K. num_frames: T, sampled as ``floor(linspace(0, N - 1, T))``.
        patch_size, size: patch side and model input side (``size`` must be a multiple of ``patch_size``).
        mv_compensate: camera compensation ``none | median | mean | similarity | affine``.
        anchors: sampled frames kept whole: ``gop`` (every ``gop_size``-th), ``first`` or ``none``.
        mv_precision: motion precision before camera compensation: ``pel`` (each component truncated
            toward zero to whole pixels, as the release's reader; the ``lmm`` preset's) or ``qpel``
            (quarter-pel as coded; the ``encoder`` preset's). Estimated motion is treated alike.
        motion: ``codec`` (the stream's vectors; H.264/MPEG only), ``estimate`` (optical flow) or
            ``auto`` (codec vectors where the decoder exports them, estimated for other codecs and intra frames).
        fusion, fusion_weights, inconsistency, residual, centre_prior: see :class:`SaliencyConfig`.
        static_threshold: below this motion (pixels, 99th percentile of patches) the clip counts as
            still and whole uniformly spaced frames are taken first; ``None`` disables it.
        keep_frames: also keep the sampled frames at the model's geometry, for
            :meth:`CodecSelection.model_inputs` (costs about a third of a decode more).
        frame_range: ``(start, end)`` frame indices (end excluded): select from that clip of the video
            (an action segment, say); N is then the clip's length.
        allow_truncated: select from the frames a truncated file holds (``meta["video"]["truncated"]``
            says what is missing) instead of refusing it.

    Raises:
        ValueError: (:class:`~onevision_encoder.codec.options.OptionError`, naming the option) for an option
            that cannot be used, before the video is opened.
        VideoError: (a subclass naming the file) for missing, unreadable, corrupt or unsuitable videos.
    """
    options = SelectionOptions.resolve(
        preset=preset,
        num_patches=num_patches,
        num_frames=num_frames,
        patch_size=patch_size,
        size=size,
        mv_compensate=mv_compensate,
        anchors=anchors,
        gop_size=gop_size,
        mv_precision=mv_precision,
        motion=motion,
        fusion=fusion,
        fusion_weights=fusion_weights,
        inconsistency=inconsistency,
        residual=residual,
        centre_prior=centre_prior,
        static_threshold=static_threshold,
        keep_frames=keep_frames,
        frame_range=frame_range,
        allow_truncated=allow_truncated,
    )
    config = saliency_config(options)
    k, num_frames, anchor_list = options.num_patches, options.num_frames, options.whole_frames

    started = time.perf_counter()
    with VideoReader(path, options.allow_truncated) as reader:
        info = reader.info
        try:
            geometry = plan_geometry(info.display_hw, options.fit, options.size, options.patch_size)
            frame_ids = sample_frame_ids(info.num_frames, num_frames, options.frame_range)
        except ValueError as error:
            raise SelectionError(info.path, str(error)) from None
        motion, baseline = resolve_motion(options, info)
        still_test = options.static_threshold is not None  # the one use of the patches' motion
        per_frame, frames = score_frames(
            reader, frame_ids, geometry, config, motion, baseline, options.keep_frames, still_test
        )

    slots = [per_frame[int(i)] for i in frame_ids]
    scores = np.stack([s.patch_scores for s in slots])
    motion_sources = [s.motion_source for s in slots]

    valid = geometry.valid_patches()
    still = still_test and is_static(np.stack([s.patch_motion for s in slots]), valid, options.static_threshold)
    whole = spread_frames(anchor_list, k // valid.size, num_frames) if still else anchor_list
    try:
        unscored = [t for t, source in enumerate(motion_sources) if source == "none"]
        score_order = select_top_k(scores, k, whole, valid, unscored)
    except ValueError as error:
        raise SelectionError(info.path, str(error)) from None

    source_kinds = sorted({s for s in motion_sources if s != "none"})
    motion_source = source_kinds[0] if len(source_kinds) == 1 else ("+".join(source_kinds) or "none")
    meta = _meta(options, geometry, info, config, whole, still)
    meta.update(
        estimate_baseline=baseline,
        frame_range=None if options.frame_range is None else list(options.frame_range),
        motion_sources=motion_sources,
        seconds=round(time.perf_counter() - started, 4),
        decode={**reader.stats.as_dict(), "motion_sources": dict(Counter(motion_sources))},
    )
    return CodecSelection(
        visible_indices=np.sort(score_order),
        score_order=score_order,
        frame_ids=frame_ids,
        grid=(num_frames, *geometry.grid_hw),
        scores=scores.astype(np.float32),
        motion_source=motion_source,
        meta=meta,
        frames=np.stack([frames[int(i)] for i in frame_ids]) if options.keep_frames else None,
    )


def saliency_config(options: SelectionOptions) -> SaliencyConfig:
    """How the resolved options score a frame."""
    return SaliencyConfig(
        mv_compensate=options.mv_compensate,
        mv_precision=options.mv_precision,
        fusion=options.fusion,
        fusion_weights=options.fusion_weights,
        inconsistency=options.inconsistency,
        residual=options.residual,
        centre_prior=options.centre_prior,
        mv_norm_floor=options.mv_norm_floor,
        check_vectors=options.check_vectors,
        residual_without_vectors=options.residual_without_vectors,
        residual_norm_floor=options.residual_norm_floor,
    )


def resolve_motion(options: SelectionOptions, info: VideoInfo) -> tuple[str, int]:
    """``options.motion`` for this video: ``auto`` made ``codec`` or ``estimate`` where the preset and the stream
    decide it (otherwise left to each frame; ``codec`` refused for a stream without vectors), and the frames back
    to the reference of estimated motion: the preset's ``estimate_baseline`` where all motion is estimated, else 1
    (an intra frame among coded vectors is estimated against the frame before it)."""
    motion = _motion(options, info)
    return motion, options.estimate_baseline if motion == "estimate" else 1


def _motion(options: SelectionOptions, info: VideoInfo) -> str:
    motion = options.motion
    if motion == "codec" and not info.exports_motion_vectors:
        raise SelectionError(
            info.path, f"{info.codec} streams carry no exportable motion vectors; use motion='estimate' or 'auto'"
        )
    if motion == "auto" and options.motion_without_vectors == "zero" and info.exports_motion_vectors:
        return "codec"  # frames without coded vectors (intra ones among them) have zero motion
    if motion == "auto" and not (info.exports_motion_vectors and info.vectors_have_known_references):
        return "estimate"  # no vectors, or vectors over unknown distances, which are no measure of motion
    return motion


def score_frames(
    reader: VideoReader,
    frame_ids: np.ndarray,
    geometry: FrameGeometry,
    config: SaliencyConfig,
    motion: str,
    estimate_baseline: int,
    keep_frames: bool,
    measure_motion: bool,
) -> tuple[dict[int, FrameScores], dict[int, np.ndarray]]:
    """Decode on this thread (and the decoder's) and make the luma planes; score them on worker threads
    meanwhile. With ``motion="estimate"`` (the whole stream's) each frame is estimated against the frame
    ``estimate_baseline`` frames before it, codec vectors or not. Each frame's score depends on nothing but its
    own sample, so the workers' order does not matter: the result is the same with any number of them."""
    info = reader.info
    turns = info.rotation // 90
    # Every frame (and reference) goes to the working size planned from the first frame, whatever its own
    # size: a stream whose frame size changes is scored on one geometry.
    work_hw = geometry.resized_hw[::-1] if turns % 2 else geometry.resized_hw
    reformatter = VideoReformatter()
    # The last planes asked for, with their frames (kept alive, so identity is safe): a reference is often a
    # frame sampled a frame or two before (dense sampling), or the I/P frame several B frames refer to. Planes
    # are made on the workers, so that this thread only decodes: a plane job is always submitted before the
    # score job that waits for it, so a worker never waits for a job still queued behind it.
    recent: deque[tuple[Any, Future[np.ndarray]]] = deque(maxlen=RECENT_PLANES)

    def plane(pool: ThreadPoolExecutor, frame: Any) -> Future[np.ndarray]:
        for known, luma in recent:
            if known is frame:
                return luma
        luma = pool.submit(luma_at, frame, work_hw)
        recent.append((frame, luma))
        return luma

    def score(
        sample: DecodedSample,
        luma: Future[np.ndarray],
        reference: Future[np.ndarray] | None,
        previous: Future[np.ndarray] | None,
    ) -> FrameScores:
        # The vectors (and estimated motion) are in pixels of this frame's own size.
        luma_hw = (sample.frame.height, sample.frame.width)
        return score_frame(
            luma.result(),
            None if reference is None else reference.result(),
            sample.motion_vectors,
            sample.is_intra,
            luma_hw,
            info.rotation,
            geometry,
            config,
            motion,
            measure_motion,
            sample.reference_gap,
            None if previous is None else previous.result(),
        )

    scores: dict[int, FrameScores] = {}
    frames: dict[int, np.ndarray] = {}
    pending: deque[tuple[int, Future[FrameScores]]] = deque()
    workers = SCORING_THREADS
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for sample in reader.samples(frame_ids, estimate_baseline, vectors=motion != "estimate"):
            reference = None if sample.reference is None else plane(pool, sample.reference)
            previous = None if sample.previous is None else plane(pool, sample.previous)
            luma = plane(pool, sample.frame)
            pending.append((sample.frame_index, pool.submit(score, sample, luma, reference, previous)))
            if keep_frames:
                rgb = rgb_at(sample.frame, work_hw, reformatter)
                frames[sample.frame_index] = geometry.to_canvas(np.rot90(rgb, turns))
            while len(pending) > PENDING_FRAMES + workers:
                index, job = pending.popleft()
                scores[index] = job.result()
        for index, job in pending:
            scores[index] = job.result()
    return scores, frames


def _meta(
    options: SelectionOptions,
    geometry: FrameGeometry,
    info: VideoInfo,
    config: SaliencyConfig,
    whole_frames: list[int],
    static_fallback: bool,
) -> dict[str, Any]:
    (top, left), (height, width) = geometry.offset, geometry.resized_hw
    canvas_h, canvas_w = geometry.canvas_hw
    hb, wb = geometry.grid_hw
    return {
        "preset": options.preset,
        "num_patches": options.num_patches,
        "K": options.num_patches,
        "num_frames": options.num_frames,
        "patch_size": geometry.patch_size,
        "hb": hb,
        "wb": wb,
        "geometry": geometry.as_dict(),
        "padding": {
            "top": max(top, 0),
            "left": max(left, 0),
            "bottom": max(canvas_h - top - height, 0),
            "right": max(canvas_w - left - width, 0),
        },
        "valid_ranges": geometry.valid_ranges(),
        "video": info.as_dict(),
        "saliency": config.as_dict(),
        "motion": options.motion,
        "anchors": options.anchors,
        "gop_size": options.gop_size,
        "whole_frames": whole_frames,
        "static_fallback": static_fallback,
    }


def compute_codec_visible_indices(
    video_path: str | os.PathLike[str],
    K: int = 2048,
    mv_compensate: str = "similarity",
    patch_size: int = 14,
    **options: Any,
) -> torch.Tensor:
    """The model card's one-liner: ``LongTensor [1, K]`` of ascending indices on the 64-frame grid.

    Pair it with the 64 frames of the same ``frame_ids`` (``select_patches(..., keep_frames=True)
    .model_inputs()`` gives both) and call ``model(video, visible_indices=...)``.
    """
    selection = select_patches(
        video_path,
        preset="encoder",
        num_patches=K,
        mv_compensate=mv_compensate,
        patch_size=patch_size,
        **options,
    )
    return torch.from_numpy(selection.visible_indices).long().unsqueeze(0)
