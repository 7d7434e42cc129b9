"""``OneVisionEncoderVideoProcessor``: video files, arrays or frame lists -> exactly the model's inputs.

Two samplings:

* ``uniform`` (default): ``num_frames`` frames spread over the video (or ``fps`` per second), resized
  and cropped like the image processor's video frames, placed on the 64-frame virtual grid at
  ``frame_positions(T)``: ``pixel_values [B, 3, T, H, W]`` and ``visible_indices [B, T*Hp*Wp]``.
* ``codec``: :func:`~onevision_encoder.select_patches` on a video file, the frames it scored (the same
  ``frame_ids``) feeding the pixels: the K patches as a mosaic ``[B, 3, K/(Hp*Wp), H, W]`` (or the whole
  clip with ``return_clip=True``) and their ``visible_indices [B, K]``.

transformers' ``BaseVideoProcessor`` needs torchvision, an optional dependency here (``pip install
onevision-encoder[video]``): each torchvision release pins one torch version, so it is never installed
behind the user's back.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

try:
    import torchvision  # noqa: F401  (transformers' BaseVideoProcessor is built on it)
except ImportError as error:
    raise ImportError(
        "OneVisionEncoderVideoProcessor needs torchvision, which is not installed: "
        f"`pip install torchvision` in the version made for your torch {torch.__version__.split('+')[0]} "
        "(see the compatibility table at https://github.com/pytorch/vision#installation), "
        "or `pip install onevision-encoder[video]`"
    ) from error

from transformers.image_processing_utils import BatchFeature
from transformers.processing_utils import Unpack, VideosKwargs
from transformers.utils import TensorType
from transformers.video_processing_utils import BaseVideoProcessor
from transformers.video_utils import VideoMetadata

from ..video.grid import VIRTUAL_FRAMES, chunk_visible_indices, frame_positions
from ..video.normalisation import CLIP_MEAN, CLIP_STD
from ..video.patches import mosaic
from .image_processing import FrameSettings, size_dict, to_array

SAMPLINGS = ("uniform", "codec")
# select_patches' keywords that a call may pass in codec sampling (keep_frames is always on).
SELECTION_OPTIONS = (
    "preset",
    "num_patches",
    "num_frames",
    "patch_size",
    "size",
    "mv_compensate",
    "anchors",
    "gop_size",
    "motion",
    "fusion",
    "fusion_weights",
    "inconsistency",
    "residual",
    "centre_prior",
    "static_threshold",
    "frame_range",
    "allow_truncated",
    "mv_precision",
)

# Options an instance may hold for every call. num_frames, size and patch_size are not among them: the
# instance's serve uniform sampling, and a call passes the selection's own.
INSTANCE_OPTIONS = tuple(
    name for name in (*SELECTION_OPTIONS, "return_clip") if name not in ("num_frames", "size", "patch_size")
)


class OneVisionEncoderVideoProcessorKwargs(VideosKwargs, total=False):
    """Per-call keyword arguments: transformers' ``VideosKwargs`` plus the sampling and selection options."""

    return_tensors: str | None
    sampling: str
    return_clip: bool
    patch_size: int
    temporal_size: int
    frame_rounding: str
    selection_size: int
    frame_range: tuple[int, int]
    allow_truncated: bool
    preset: str
    num_patches: int
    mv_compensate: str
    mv_precision: str
    anchors: str
    gop_size: int
    motion: str
    fusion: str
    fusion_weights: tuple[float, float]
    inconsistency: bool
    residual: str
    centre_prior: float
    static_threshold: float | None


class OneVisionEncoderVideoProcessor(BaseVideoProcessor):
    """Videos to ``pixel_values`` and ``visible_indices`` for ``OneVisionEncoderModel``.

    ``videos``: a video file path, a ``[T, H, W, C]`` array or tensor (``[T, C, H, W]`` too), a list of
    frames (PIL images or arrays), or a list of these. ``model(**processor(videos=path))`` runs the model.
    Per call: every attribute, ``sampling``, ``return_clip``, ``return_metadata`` (adds ``video_metadata``
    with the ``frames_indices`` read, and for codec sampling ``positions_thw [B, K, 3]``), ``return_tensors``
    (``"pt"`` default, ``"np"``, ``None``), and for ``sampling="codec"`` every keyword of ``select_patches``
    (its ``num_frames``, ``size`` and ``patch_size`` included: the processor's own apply to uniform sampling).
    """

    valid_kwargs = OneVisionEncoderVideoProcessorKwargs
    model_input_names = ["pixel_values", "visible_indices"]
    resample = Image.Resampling.BICUBIC
    size = {"shortest_edge": 224}
    default_to_square = False
    crop_size = {"height": 224, "width": 224}
    do_resize = True
    do_center_crop = True
    do_rescale = True
    rescale_factor = 1 / 255
    do_normalize = True
    image_mean = list(CLIP_MEAN)
    image_std = list(CLIP_STD)
    do_convert_rgb = True
    do_sample_frames = True
    num_frames = 8
    fps = None
    sampling = "uniform"
    patch_size = 14
    temporal_size = VIRTUAL_FRAMES
    # Where uniform frames sit on the virtual grid: "floor" (the model card's floor(linspace(0, 63, T))) or
    # "round" (the release's attentive probe, round(i / (T - 1) * 63)); they differ for T = 16.
    frame_rounding = "floor"
    # Codec sampling's model input side (select_patches' ``size``), kept with the processor: its own ``size``
    # is uniform sampling's frame size. None: the selection preset's.
    selection_size = None

    def __init__(self, **kwargs: Unpack[OneVisionEncoderVideoProcessorKwargs]) -> None:
        super().__init__(**kwargs)
        # Plain dicts and lists (transformers 5 stores SizeDicts and tuples), the same in both versions.
        if self.size is not None:
            self.size = size_dict(self.size, default_to_square=bool(self.default_to_square))
        if self.crop_size is not None:
            self.crop_size = size_dict(self.crop_size, param_name="crop_size")
        self.image_mean, self.image_std = (
            None if value is None else list(np.atleast_1d(value).tolist())
            for value in (self.image_mean, self.image_std)
        )
        if self.sampling not in SAMPLINGS:
            raise ValueError(f"sampling must be one of {SAMPLINGS}, got {self.sampling!r}")

    def __call__(self, videos: Any = None, **kwargs: Unpack[OneVisionEncoderVideoProcessorKwargs]) -> BatchFeature:
        return self.preprocess(videos, **kwargs)

    def preprocess(self, videos: Any = None, **kwargs: Unpack[OneVisionEncoderVideoProcessorKwargs]) -> BatchFeature:
        """Preprocess one video or a batch (see the class docstring). An unknown keyword raises ``TypeError``."""
        unknown = sorted(set(kwargs) - set(self.valid_kwargs.__annotations__))
        if unknown:
            raise TypeError(f"{type(self).__name__} got unexpected arguments: {unknown}")
        if videos is None:
            raise ValueError(
                "pass videos=...: a video file, a [T, H, W, C] array, a list of frames, or a list of these"
            )
        return_tensors = kwargs.pop("return_tensors", "pt")
        if isinstance(return_tensors, TensorType):
            return_tensors = return_tensors.value
        if return_tensors not in ("pt", "np", None):
            raise ValueError(f"return_tensors must be 'pt', 'np' or None, got {return_tensors!r}")
        sampling = kwargs.pop("sampling", None) or self.sampling
        if sampling not in SAMPLINGS:
            raise ValueError(f"sampling must be one of {SAMPLINGS}, got {sampling!r}")
        return_metadata = bool(kwargs.pop("return_metadata", None) or self.return_metadata)
        device = kwargs.pop("device", None)
        for key in INSTANCE_OPTIONS:
            if kwargs.get(key) is None and getattr(self, key, None) is not None:
                kwargs[key] = getattr(self, key)
        items = _videos_of(videos)
        if sampling == "codec":
            data = self._codec(items, kwargs, return_metadata)
        else:
            data = self._uniform(items, kwargs)
        metadata = data.pop("video_metadata")
        features = BatchFeature(data=_convert(data, return_tensors))
        if device is not None and return_tensors == "pt":
            features = features.to(device)
        if return_metadata:
            features["video_metadata"] = metadata
        return features

    def sample_frames(
        self, metadata: VideoMetadata, num_frames: int | None = None, fps: float | None = None, **kwargs: Any
    ) -> np.ndarray:
        """Indices of the frames to take from a video of ``metadata.total_num_frames`` frames:
        ``floor(linspace(0, N - 1, num_frames))``, or ``fps`` frames per second of ``metadata.fps``."""
        if num_frames is not None and fps is not None:
            raise ValueError("num_frames and fps are exclusive: pass one of them")
        num_frames = num_frames if num_frames is not None or fps is not None else self.num_frames
        fps = fps if fps is not None or num_frames is not None else self.fps
        total = metadata.total_num_frames
        if num_frames is None and fps is not None:
            if not metadata.fps:
                raise ValueError("sampling fps frames per second needs video_metadata with the video's fps")
            num_frames = int(total / metadata.fps * fps)
        if num_frames is None:
            return np.arange(total)
        if not 1 <= num_frames <= total:
            raise ValueError(f"cannot sample {num_frames} frames from a video of {total}")
        return np.floor(np.linspace(0, total - 1, num_frames)).astype(np.int64)

    # --- uniform sampling ------------------------------------------------------------------------

    def _uniform(self, items: list[Any], kwargs: dict[str, Any]) -> dict[str, Any]:
        options = {key: value for key, value in kwargs.items() if value is not None}
        settings = self._frame_settings(options)
        do_sample = options.get("do_sample_frames", self.do_sample_frames)
        num_frames, fps = options.get("num_frames"), options.get("fps")
        if num_frames is None and fps is None:
            num_frames, fps = self.num_frames, self.fps
        metadata = _metadata_list(kwargs.get("video_metadata"), len(items))
        clips, metadatas = [], []
        for item, given in zip(items, metadata, strict=True):
            if isinstance(item, (str, os.PathLike)):
                frames, info = self._read(item, options, do_sample, num_frames, fps)
            else:
                frames = _frames_of(item)
                info = given or VideoMetadata(total_num_frames=len(frames))
                if do_sample:
                    indices = self.sample_frames(info, num_frames=num_frames, fps=fps)
                    frames = [frames[int(i)] for i in indices]
                    info.frames_indices = indices.tolist()
            clips.append(self._clip(frames, settings, options))
            metadatas.append(info)
        shapes = {clip.shape for clip in clips}
        if len(shapes) > 1:
            raise ValueError(f"videos of one batch must give clips of equal shape [C, T, H, W], got {sorted(shapes)}")
        length, height, width = clips[0].shape[1:]
        patch = int(options.get("patch_size", self.patch_size))
        if height % patch or width % patch:
            raise ValueError(f"frames of {height}x{width} are not a whole number of {patch}x{patch} patches")
        temporal = int(options.get("temporal_size", self.temporal_size))
        if length > temporal:
            raise ValueError(f"{length} frames do not fit the model's {temporal}-frame grid: sample fewer")
        positions = frame_positions(length, temporal, rounding=options.get("frame_rounding", self.frame_rounding))
        indices = chunk_visible_indices(positions, (height // patch, width // patch))
        return {
            "pixel_values": np.stack(clips),
            "visible_indices": np.broadcast_to(indices.numpy(), (len(clips), indices.numel())).copy(),
            "video_metadata": metadatas,
        }

    def _read(
        self, path: str | os.PathLike[str], options: dict[str, Any], do_sample: bool, num_frames: int | None, fps: Any
    ) -> tuple[list[np.ndarray], VideoMetadata]:
        from ..codec.frames import read_video_frames

        read = read_video_frames(
            path,
            num_frames=num_frames if do_sample else None,
            fps=fps if do_sample else None,
            frame_range=options.get("frame_range"),
            allow_truncated=bool(options.get("allow_truncated", False)),
        )
        return list(read.frames), _metadata(read.info.num_frames, read.info.fps, read.info.display_hw, read.frame_ids)

    def _clip(self, frames: Sequence[Any], settings: FrameSettings, options: dict[str, Any]) -> np.ndarray:
        do_convert_rgb = options.get("do_convert_rgb", self.do_convert_rgb)
        layout = options.get("input_data_format")
        arrays = [settings.transform(to_array(frame, do_convert_rgb, layout)) for frame in frames]
        shapes = {array.shape for array in arrays}
        if len(shapes) > 1:
            raise ValueError(f"frames of one video must share a size, got {sorted(shapes)}")
        return np.stack(arrays, axis=1)

    def _frame_settings(self, options: dict[str, Any]) -> FrameSettings:
        def pick(name: str) -> Any:
            return options.get(name, getattr(self, name))

        mean, std = pick("image_mean"), pick("image_std")
        return FrameSettings(
            mode="crop",
            do_resize=bool(pick("do_resize")),
            size=size_dict(pick("size"), default_to_square=bool(pick("default_to_square"))),
            do_center_crop=bool(pick("do_center_crop")),
            crop_size=size_dict(pick("crop_size"), param_name="crop_size"),
            max_pixels=0,
            min_pixels=0,
            patch_size=int(pick("patch_size")),
            resample=int(pick("resample")),
            do_rescale=bool(pick("do_rescale")),
            rescale_factor=float(pick("rescale_factor")),
            do_normalize=bool(pick("do_normalize")),
            image_mean=tuple(np.atleast_1d(np.asarray(mean, dtype=np.float64)).tolist()),
            image_std=tuple(np.atleast_1d(np.asarray(std, dtype=np.float64)).tolist()),
        )

    # --- codec sampling --------------------------------------------------------------------------

    def _codec(self, items: list[Any], kwargs: dict[str, Any], return_metadata: bool) -> dict[str, Any]:
        from ..codec.select import select_patches

        # None: the selection's own default (transformers 5's pipeline passes num_frames=None, say).
        options = {key: value for key, value in kwargs.items() if key in SELECTION_OPTIONS and value is not None}
        selection_size = kwargs.get("selection_size") or self.selection_size
        if "size" not in options and selection_size is not None:
            options["size"] = int(selection_size)
        # The selection's frames are already at its geometry, which its indices refer to.
        overrides = {k: v for k, v in kwargs.items() if v is not None and k not in options}
        settings = self._frame_settings({**overrides, "do_resize": False, "do_center_crop": False})
        return_clip = bool(kwargs.get("return_clip", False))
        pixels, indices, positions, metadata = [], [], [], []
        for item in items:
            if not isinstance(item, (str, os.PathLike)):
                raise ValueError(
                    "sampling='codec' reads a video file's motion vectors: pass the file's path, not "
                    f"{type(item).__name__} frames"
                )
            selection = select_patches(item, keep_frames=True, **options)
            clip = torch.from_numpy(np.stack([settings.transform(frame) for frame in selection.frames], axis=1))
            visible = torch.from_numpy(selection.visible_indices).long().unsqueeze(0)
            if not return_clip:
                tiles, visible = mosaic(clip.unsqueeze(0), visible, selection.patch_size)
                clip = tiles[0]
            pixels.append(clip.numpy())
            indices.append(visible[0].numpy())
            positions.append(selection.positions_thw)
            video = selection.meta["video"]
            metadata.append(_metadata(video["num_frames"], video["fps"], video["display_hw"], selection.frame_ids))
        if len({array.shape for array in pixels}) > 1 or len({array.shape for array in indices}) > 1:
            raise ValueError(
                "the videos of one batch gave selections of different sizes; pass the same num_patches and geometry"
            )
        data = {"pixel_values": np.stack(pixels), "visible_indices": np.stack(indices), "video_metadata": metadata}
        if return_metadata:
            data["positions_thw"] = np.stack(positions)
        return data


def _videos_of(videos: Any) -> list[Any]:
    """A batch: each item a path, a ``[T, ...]`` array/tensor, or a list of frames."""
    if isinstance(videos, (str, os.PathLike)):
        return [videos]
    if isinstance(videos, (np.ndarray, torch.Tensor)):
        if videos.ndim == 4:
            return [videos]
        if videos.ndim == 5:
            return list(videos)
        raise ValueError(
            f"a video array must be [T, H, W, C] / [T, C, H, W] or a batch of them, got shape {tuple(videos.shape)}"
        )
    if isinstance(videos, Image.Image):
        raise ValueError("a single image is not a video: pass a list of frames")
    items = list(videos)
    if not items:
        raise ValueError("no videos given")
    if isinstance(items[0], Image.Image) or (
        isinstance(items[0], (np.ndarray, torch.Tensor)) and items[0].ndim in (2, 3)
    ):
        return [items]
    return items


def _frames_of(video: Any) -> list[Any]:
    if isinstance(video, (np.ndarray, torch.Tensor)) and video.ndim != 4:
        raise ValueError(f"a video array must be [T, H, W, C] or [T, C, H, W], got shape {tuple(video.shape)}")
    frames = list(video)
    if not frames:
        raise ValueError("a video has no frames")
    return frames


def _metadata_list(metadata: Any, count: int) -> list[VideoMetadata | None]:
    """``video_metadata`` as one :class:`VideoMetadata` (or None) per video; nested lists are flattened."""
    if metadata is None:
        return [None] * count
    entries = [metadata] if isinstance(metadata, Mapping) else list(metadata)
    flat = [entry for group in entries for entry in ([group] if isinstance(group, Mapping) else group)]
    if len(flat) != count:
        raise ValueError(f"got {count} videos but {len(flat)} video_metadata entries: pass one per video")
    return [entry if isinstance(entry, VideoMetadata) else VideoMetadata(**entry) for entry in flat]


def _metadata(num_frames: int, fps: float | None, display_hw: Sequence[int], frame_ids: np.ndarray) -> VideoMetadata:
    height, width = display_hw
    return VideoMetadata(
        total_num_frames=int(num_frames),
        fps=fps,
        width=int(width),
        height=int(height),
        duration=num_frames / fps if fps else None,
        video_backend="pyav",
        frames_indices=[int(i) for i in frame_ids],
    )


def _convert(data: dict[str, np.ndarray], return_tensors: str | None) -> dict[str, Any]:
    if return_tensors == "pt":
        return {key: torch.from_numpy(np.ascontiguousarray(value)) for key, value in data.items()}
    if return_tensors is None:
        return {key: list(value) for key, value in data.items()}
    return data
