"""Image and video-frame preprocessing for the OneVision Encoder.

Two modes:

* ``crop`` (the release's): resize the shortest edge (bicubic), centre crop, rescale to [0, 1],
  normalise with the CLIP mean and std. Images go to 448x448, video frames to 224x224.
* ``native``: keep the aspect ratio, round each side to a multiple of the patch size and keep
  the pixel count within ``[min_pixels, max_pixels]`` (images) or ``video_max_pixels`` (frames),
  so the model runs at (close to) the input's own resolution.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers.image_processing_utils import BaseImageProcessor, BatchFeature, get_size_dict
from transformers.image_utils import ChannelDimension
from transformers.processing_utils import ImagesKwargs, Unpack
from transformers.utils import TensorType, logging

from ..video.normalisation import CLIP_MEAN, CLIP_STD

MODES = ("crop", "native")

logger = logging.get_logger(__name__)


class OneVisionEncoderImageProcessorKwargs(ImagesKwargs, total=False):
    """Per-call keyword arguments: transformers' ``ImagesKwargs`` plus the OneVision ones."""

    # transformers 4.57's ImagesKwargs lacks it (5.x has it).
    do_convert_rgb: bool
    return_tensors: str | None
    mode: str
    patch_size: int
    min_pixels: int
    max_pixels: int
    video_size: dict
    video_crop_size: dict
    video_max_pixels: int


def native_resolution_size(
    height: int, width: int, patch_size: int, min_pixels: int, max_pixels: int
) -> tuple[int, int]:
    """Output size for the native mode: aspect ratio kept, sides multiples of ``patch_size``,
    ``min_pixels <= h * w <= max_pixels`` (each side at least one patch)."""
    if height < 1 or width < 1:
        raise ValueError(f"image has an empty side: {height}x{width}")
    if min_pixels > max_pixels:
        raise ValueError(f"min_pixels ({min_pixels}) is larger than max_pixels ({max_pixels})")
    if max_pixels < patch_size * patch_size:
        raise ValueError(f"max_pixels ({max_pixels}) is smaller than one {patch_size}x{patch_size} patch")
    p = patch_size
    out_h = max(p, round(height / p) * p)
    out_w = max(p, round(width / p) * p)
    if out_h * out_w > max_pixels:
        scale = math.sqrt(height * width / max_pixels)
        out_h = max(p, math.floor(height / scale / p) * p)
        out_w = max(p, math.floor(width / scale / p) * p)
    elif out_h * out_w < min_pixels:
        scale = math.sqrt(min_pixels / (height * width))
        out_h = math.ceil(height * scale / p) * p
        out_w = math.ceil(width * scale / p) * p
    return out_h, out_w


def shortest_edge_size(height: int, width: int, shortest_edge: int) -> tuple[int, int]:
    """Size with the shortest side at ``shortest_edge`` and the other scaled (truncated), as CLIP does."""
    if height <= width:
        return shortest_edge, int(shortest_edge * width / height)
    return int(shortest_edge * height / width), shortest_edge


def to_array(image: Any, do_convert_rgb: bool = True, input_data_format: str | None = None) -> np.ndarray:
    """A PIL image, or an array/tensor in HWC or CHW layout, as an ``[H, W, C]`` array.

    uint8 stays uint8; other integer arrays must hold 0-255; floating point arrays become float32 (in
    [0, 1] when already rescaled, else 0-255). With ``do_convert_rgb`` the result has 3 channels: grey is
    repeated and an alpha channel is composited onto white, as transformers does; without it the channels
    are kept as given. ``input_data_format`` (``"channels_first"`` / ``"channels_last"``) says the layout
    of arrays; by default a last axis of 1, 3 or 4 is taken as channels.
    """
    if isinstance(image, Image.Image):
        if do_convert_rgb and ("A" in image.getbands() or "transparency" in image.info):
            image = image.convert("RGBA")
        elif do_convert_rgb and image.mode != "RGB":
            image = image.convert("RGB")
        image = np.asarray(image)
        input_data_format = "channels_last"
    elif isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
    elif not isinstance(image, np.ndarray):
        raise TypeError(f"expected a PIL image, numpy array or torch tensor, got {type(image).__name__}")
    image = _pixel_dtype(image)
    if image.ndim == 2:
        image, input_data_format = image[:, :, None], "channels_last"
    if image.ndim != 3:
        raise ValueError(f"an image must be [H, W, C] or [C, H, W], got shape {image.shape}")
    layout = None if input_data_format is None else ChannelDimension(input_data_format)
    if layout == ChannelDimension.FIRST or (
        layout is None and image.shape[-1] not in (1, 3, 4) and image.shape[0] in (1, 3, 4)
    ):
        image = image.transpose(1, 2, 0)
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"image has an empty side: {image.shape[0]}x{image.shape[1]}")
    if do_convert_rgb:
        image = _to_rgb(image)
    return np.ascontiguousarray(image)


def _pixel_dtype(image: np.ndarray) -> np.ndarray:
    if image.dtype == np.uint8:
        return image
    if np.issubdtype(image.dtype, np.floating):
        if not np.isfinite(image).all():
            raise ValueError("image holds NaN or infinite values")
        return image.astype(np.float32, copy=False)
    if np.issubdtype(image.dtype, np.integer) and image.dtype != np.bool_:
        if image.size and (image.min() < 0 or image.max() > 255):
            raise ValueError(
                f"integer images must hold 0-255, got {image.dtype} values in [{image.min()}, {image.max()}]"
            )
        return image.astype(np.uint8)
    raise ValueError(f"images must hold uint8 (0-255) or floating point pixels, got {image.dtype}")


def _to_rgb(image: np.ndarray) -> np.ndarray:
    channels = image.shape[-1]
    if channels == 3:
        return image
    if channels == 1:
        return np.repeat(image, 3, axis=-1)
    if channels == 4:
        white = 255.0 if image.dtype == np.uint8 or image.max() > 1 else 1.0
        alpha = image[..., 3:].astype(np.float32) / white
        rgb = alpha * image[..., :3] + (1 - alpha) * white
        return np.round(rgb).astype(np.uint8) if image.dtype == np.uint8 else rgb.astype(np.float32)
    raise ValueError(f"do_convert_rgb needs 1, 3 or 4 channels, got {channels} (shape {image.shape})")


def is_rescaled(image: np.ndarray) -> bool:
    """Floating point pixels all within [0, 1]: already rescaled (transformers' ``is_scaled_image``)."""
    return image.dtype != np.uint8 and float(image.min()) >= 0 and float(image.max()) <= 1


def center_crop(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Centre crop of an ``[H, W, C]`` array, zero-padded (centred) where the image is smaller."""
    in_h, in_w = image.shape[:2]
    if in_h < height or in_w < width:
        padded = np.zeros((max(in_h, height), max(in_w, width), image.shape[2]), dtype=image.dtype)
        top, left = (padded.shape[0] - in_h) // 2, (padded.shape[1] - in_w) // 2
        padded[top : top + in_h, left : left + in_w] = image
        image, in_h, in_w = padded, padded.shape[0], padded.shape[1]
    top, left = (in_h - height) // 2, (in_w - width) // 2
    return image[top : top + height, left : left + width]


def size_dict(size: Any, default_to_square: bool = False, param_name: str = "size") -> dict[str, int]:
    """``size`` / ``crop_size`` as a plain dict: an int is a shortest edge (``size``) or a square
    (``crop_size``), as transformers reads them; transformers 5's ``SizeDict`` is unpacked."""
    if size is not None and not isinstance(size, (dict, int, tuple, list)):
        size = {
            key: getattr(size, key)
            for key in ("height", "width", "shortest_edge", "longest_edge")
            if getattr(size, key, None) is not None
        }
    square = default_to_square or param_name == "crop_size"
    return dict(get_size_dict(size, default_to_square=square, param_name=param_name))


@dataclass(frozen=True)
class FrameSettings:
    """How one image or video frame is transformed (the processor's attributes merged with a call's)."""

    mode: str
    do_resize: bool
    size: dict[str, int]
    do_center_crop: bool
    crop_size: dict[str, int]
    max_pixels: int
    min_pixels: int
    patch_size: int
    resample: int
    do_rescale: bool
    rescale_factor: float
    do_normalize: bool
    image_mean: tuple[float, ...]
    image_std: tuple[float, ...]

    def output_hw(self, height: int, width: int) -> tuple[int, int]:
        if self.mode == "native":
            return native_resolution_size(
                height, width, self.patch_size, min(self.min_pixels, self.max_pixels), self.max_pixels
            )
        return self.crop_size["height"], self.crop_size["width"]

    def transform(self, array: np.ndarray) -> np.ndarray:
        """``[H, W, C]`` pixels to normalised float32 ``[C, H', W']``."""
        height, width = array.shape[:2]
        # Decided before resampling, whose overshoot can leave [0, 1].
        rescale = self.do_rescale and not is_rescaled(array)
        if self.do_resize:
            if self.mode == "native":
                array = resize(array, *self.output_hw(height, width), self.resample)
            elif "shortest_edge" in self.size:
                array = resize(array, *shortest_edge_size(height, width, self.size["shortest_edge"]), self.resample)
            else:
                array = resize(array, self.size["height"], self.size["width"], self.resample)
        if self.do_center_crop and self.mode == "crop":
            array = center_crop(array, self.crop_size["height"], self.crop_size["width"])
        pixels = array.astype(np.float32)
        if rescale:
            pixels = (array.astype(np.float64) * self.rescale_factor).astype(np.float32)
        if self.do_normalize:
            channels = pixels.shape[-1]
            mean, std = (
                np.broadcast_to(np.asarray(v, np.float32), (channels,))
                for v in _per_channel(self.image_mean, self.image_std, channels)
            )
            pixels = (pixels - mean) / std
        return pixels.transpose(2, 0, 1)


def _per_channel(mean: tuple[float, ...], std: tuple[float, ...], channels: int) -> tuple[tuple, tuple]:
    for name, values in (("image_mean", mean), ("image_std", std)):
        if len(values) not in (1, channels):
            raise ValueError(
                f"{name} has {len(values)} values but the image has {channels} channels "
                "(pass one value per channel, or do_convert_rgb=True for RGB)"
            )
    return mean, std


def _floats(value: float | Sequence[float], name: str) -> tuple[float, ...]:
    values = (value,) if isinstance(value, numbers.Real) else tuple(value)
    if not values or not all(
        isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v) for v in values
    ):
        raise ValueError(f"{name} must be a number or a list of numbers, got {value!r}")
    return tuple(float(v) for v in values)


class OneVisionEncoderImageProcessor(BaseImageProcessor):
    """Turns images into ``pixel_values [B, 3, H, W]`` and videos (lists of frames) into ``pixel_values_videos
    [B, 3, T, H, W]`` (each key one kind of input, as transformers' image processors that take videos name them).

    Call it as ``processor(images=...)``, ``processor(videos=...)`` or both. Every attribute set in
    ``__init__`` (and transformers' standard image arguments) may be overridden per call. In ``native``
    mode images of different sizes cannot be stacked: ``pixel_values`` is then a list of ``[3, H, W]``
    tensors. ``return_tensors`` is ``"pt"`` (the default), ``"np"`` or ``None`` (lists of arrays).
    """

    model_input_names = ["pixel_values", "pixel_values_videos"]
    valid_kwargs = OneVisionEncoderImageProcessorKwargs

    def __init__(
        self,
        mode: str = "crop",
        do_resize: bool = True,
        size: dict[str, int] | int | None = None,
        do_center_crop: bool = True,
        crop_size: dict[str, int] | int | None = None,
        video_size: dict[str, int] | int | None = None,
        video_crop_size: dict[str, int] | int | None = None,
        patch_size: int = 14,
        min_pixels: int = 112 * 112,
        max_pixels: int = 448 * 448,
        video_max_pixels: int = 224 * 224,
        resample: int = Image.Resampling.BICUBIC,
        do_rescale: bool = True,
        rescale_factor: float = 1 / 255,
        do_normalize: bool = True,
        image_mean: float | Sequence[float] = CLIP_MEAN,
        image_std: float | Sequence[float] = CLIP_STD,
        do_convert_rgb: bool = True,
        **kwargs: Any,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        super().__init__(**kwargs)
        self.mode = mode
        self.do_resize = do_resize
        self.size = size_dict(448 if size is None else size)
        self.do_center_crop = do_center_crop
        self.crop_size = size_dict(448 if crop_size is None else crop_size, param_name="crop_size")
        self.video_size = size_dict(224 if video_size is None else video_size)
        self.video_crop_size = size_dict(224 if video_crop_size is None else video_crop_size, param_name="crop_size")
        self.patch_size = patch_size
        self.min_pixels = min_pixels
        self.max_pixels = max_pixels
        self.video_max_pixels = video_max_pixels
        self.resample = int(resample)
        self.do_rescale = do_rescale
        self.rescale_factor = rescale_factor
        self.do_normalize = do_normalize
        self.image_mean = list(_floats(image_mean, "image_mean"))
        self.image_std = list(_floats(image_std, "image_std"))
        self.do_convert_rgb = do_convert_rgb

    def __call__(self, images: Any = None, videos: Any = None, **kwargs: Any) -> BatchFeature:
        return self.preprocess(images, videos=videos, **kwargs)

    def preprocess(
        self, images: Any = None, videos: Any = None, **kwargs: Unpack[OneVisionEncoderImageProcessorKwargs]
    ) -> BatchFeature:
        """Preprocess ``images`` (one or a list) and/or ``videos`` (one or a list of frame sequences).

        Returns a ``BatchFeature`` with ``pixel_values`` for images and ``pixel_values_videos`` for videos,
        whichever are given. Keyword arguments override the processor's
        attributes for this call (``mode``, ``size``, ``crop_size``, ``image_mean``, ``do_rescale``, ...),
        plus ``return_tensors`` (``"pt"``, ``"np"`` or ``None``), ``data_format`` (images only),
        ``input_data_format`` and ``device``. An unknown keyword raises ``TypeError``.
        """
        unknown = sorted(set(kwargs) - set(self.valid_kwargs.__annotations__))
        if unknown:
            raise TypeError(f"{type(self).__name__} got unexpected arguments: {unknown}")
        if images is None and videos is None:
            raise ValueError("pass images=..., videos=... or both")
        options = {key: value for key, value in kwargs.items() if value is not None}
        return_tensors = kwargs.get("return_tensors", "pt")
        if isinstance(return_tensors, TensorType):
            return_tensors = return_tensors.value
        if return_tensors not in ("pt", "np", None):
            raise ValueError(f"return_tensors must be 'pt', 'np' or None, got {return_tensors!r}")
        if options.get("do_pad"):
            raise ValueError("do_pad is not supported: the crop mode gives equal sizes, the native mode a list")
        data_format = ChannelDimension(options.get("data_format", ChannelDimension.FIRST))
        do_convert_rgb = options.get("do_convert_rgb", self.do_convert_rgb)
        input_data_format = options.get("input_data_format")
        data: dict[str, Any] = {}
        if images is not None:
            settings = self.frame_settings(video=False, **options)
            frames = []
            for image in _as_list(images, depth=0):
                array = to_array(image, do_convert_rgb, input_data_format)
                _warn_if_rescaled(array, settings)
                frames.append(settings.transform(array))
            if data_format == ChannelDimension.LAST:
                frames = [frame.transpose(1, 2, 0) for frame in frames]
            data["pixel_values"] = _stack(frames, return_tensors, ragged_ok=True)
        if videos is not None:
            if data_format != ChannelDimension.FIRST:
                raise ValueError("data_format must be channels_first for videos (clips are [B, C, T, H, W])")
            settings = self.frame_settings(video=True, **options)
            clips = []
            for video in _as_list(videos, depth=1):
                frames = []
                for frame in _frames_of(video):
                    array = to_array(frame, do_convert_rgb, input_data_format)
                    _warn_if_rescaled(array, settings)
                    frames.append(settings.transform(array))
                clips.append(_stack(frames, "np", ragged_ok=False).transpose(1, 0, 2, 3))
            sizes = {clip.shape for clip in clips}
            if len(sizes) > 1:
                raise ValueError(
                    f"videos of one batch must give clips of equal shape [C, T, H, W], got {sorted(sizes)}"
                )
            data["pixel_values_videos"] = _stack(clips, return_tensors, ragged_ok=False)
        features = BatchFeature(data=data)
        device = options.get("device")
        return features.to(device) if device is not None and return_tensors == "pt" else features

    def frame_settings(self, video: bool = False, **overrides: Any) -> FrameSettings:
        """The transform of images (or, with ``video=True``, video frames): attributes merged with ``overrides``."""

        def pick(name: str) -> Any:
            return overrides.get(name, getattr(self, name))

        mode = pick("mode")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        size_name, crop_name, max_name = (
            ("video_size", "video_crop_size", "video_max_pixels") if video else ("size", "crop_size", "max_pixels")
        )
        resample = overrides.get("resample", self.resample)
        if not isinstance(resample, (int, Image.Resampling)):
            raise ValueError(f"resample must be a PIL resampling filter (e.g. PIL.Image.BICUBIC), got {resample!r}")
        rescale_factor = pick("rescale_factor")
        if not isinstance(rescale_factor, (int, float)) or not math.isfinite(rescale_factor):
            raise ValueError(f"rescale_factor must be a number, got {rescale_factor!r}")
        return FrameSettings(
            mode=mode,
            do_resize=bool(pick("do_resize")),
            size=size_dict(pick(size_name), default_to_square=bool(overrides.get("default_to_square", False))),
            do_center_crop=bool(pick("do_center_crop")),
            crop_size=size_dict(pick(crop_name), param_name="crop_size"),
            max_pixels=int(pick(max_name)),
            min_pixels=int(pick("min_pixels")),
            patch_size=int(pick("patch_size")),
            resample=int(resample),
            do_rescale=bool(pick("do_rescale")),
            rescale_factor=float(rescale_factor),
            do_normalize=bool(pick("do_normalize")),
            image_mean=_floats(pick("image_mean"), "image_mean"),
            image_std=_floats(pick("image_std"), "image_std"),
        )

    def output_size(self, height: int, width: int, mode: str | None = None, video: bool = False) -> tuple[int, int]:
        """``(H, W)`` that an image (or video frame) of ``height x width`` becomes."""
        return self.frame_settings(video, **({} if mode is None else {"mode": mode})).output_hw(height, width)


def _warn_if_rescaled(array: np.ndarray, settings: FrameSettings) -> None:
    if settings.do_rescale and is_rescaled(array):
        logger.warning_once(
            "Images of floating point values in [0, 1] are taken as already rescaled: rescale_factor is not "
            "applied to them. Pass do_rescale=False to say so, or 0-255 values to have them rescaled."
        )


def resize(array: np.ndarray, height: int, width: int, resample: int) -> np.ndarray:
    """``[H, W, C]`` resized with PIL; uint8 RGB as PIL images (bit-exact with CLIP's processor), other
    channel counts and float pixels channel by channel in 32-bit float (no rounding, no clipping)."""
    if array.shape[:2] == (height, width):
        return array
    if array.dtype == np.uint8 and array.shape[2] == 3:
        return np.asarray(Image.fromarray(array).resize((width, height), resample=resample))
    planes = [
        np.asarray(
            Image.fromarray(np.ascontiguousarray(array[:, :, c], dtype=np.float32), mode="F").resize(
                (width, height), resample=resample
            )
        )
        for c in range(array.shape[2])
    ]
    return np.stack(planes, axis=-1)


def _is_single_image(value: Any) -> bool:
    if isinstance(value, Image.Image):
        return True
    return isinstance(value, (np.ndarray, torch.Tensor)) and value.ndim in (2, 3)


def _as_list(value: Any, depth: int) -> list[Any]:
    """One item or a list of items; ``depth=1`` means items are themselves frame sequences."""
    if depth == 0:
        return [value] if _is_single_image(value) else list(value)
    if isinstance(value, (np.ndarray, torch.Tensor)):
        return [value] if value.ndim == 4 else list(value)
    value = list(value)
    if value and _is_single_image(value[0]):
        return [value]
    return value


def _frames_of(video: Any) -> list[Any]:
    frames = list(video)
    if not frames:
        raise ValueError("a video has no frames")
    return frames


def _stack(arrays: list[np.ndarray], return_tensors: str | None, ragged_ok: bool) -> Any:
    if not arrays:
        raise ValueError("no images given")
    if len({a.shape for a in arrays}) > 1:
        if not ragged_ok:
            raise ValueError(f"frames of one video must share a size, got {sorted({a.shape for a in arrays})}")
        return [torch.from_numpy(a) for a in arrays] if return_tensors == "pt" else arrays
    if return_tensors is None:
        return arrays
    stacked = np.stack(arrays)
    return torch.from_numpy(stacked) if return_tensors == "pt" else stacked
