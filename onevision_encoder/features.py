"""Features of images and videos: model inputs for each mode, then batched forward passes.

Modes: ``image`` (one picture, the processor's 448 crop or native resolution), ``chunk`` (8 or 16
uniformly sampled frames placed on the 64-frame virtual grid), ``codec`` (K codec-selected patches
of 64 frames, fed as a mosaic with their true positions).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .codec import CodecSelection, select_patches
from .codec.reader import read_sampled_frames
from .media import IMAGE_SUFFIXES
from .model import OneVisionEncoderImageProcessor, OneVisionEncoderModel
from .video import chunk_visible_indices, frame_positions, indices_to_positions, mosaic

MODES = ("image", "chunk", "codec")
FrameTransform = Callable[[np.ndarray], np.ndarray]  # uint8 frames [T, H, W, 3] -> the same shape


@dataclass
class EncoderInput:
    """One sample ready for the model (no batch dimension) and where its tokens sit."""

    name: str
    mode: str
    pixel_values: torch.Tensor
    visible_indices: torch.Tensor | None
    positions_thw: np.ndarray
    frame_ids: np.ndarray | None

    def batch_key(self) -> tuple[object, ...]:
        """Samples with equal keys can be stacked into one batch."""
        shape = None if self.visible_indices is None else tuple(self.visible_indices.shape)
        return self.mode, tuple(self.pixel_values.shape), shape


def guess_mode(path: str | os.PathLike[str]) -> str:
    """``image`` for picture files (by suffix), ``codec`` for everything else."""
    return "image" if Path(path).suffix.lower() in IMAGE_SUFFIXES else "codec"


def image_input(
    path: str | os.PathLike[str], processor: OneVisionEncoderImageProcessor, name: str | None = None
) -> EncoderInput:
    try:
        with Image.open(path) as image:
            pixels = processor(images=image.convert("RGB"))["pixel_values"][0]
    except (OSError, SyntaxError) as error:
        raise ValueError(f"{path}: cannot be read as an image ({error})") from None
    hp, wp = (side // processor.patch_size for side in pixels.shape[-2:])
    positions = indices_to_positions(torch.arange(hp * wp), (hp, wp)).numpy().astype(np.int32)
    return EncoderInput(name or str(path), "image", pixels, None, positions, None)


def chunk_input(
    path: str | os.PathLike[str],
    num_frames: int,
    processor: OneVisionEncoderImageProcessor,
    temporal_size: int = 64,
    name: str | None = None,
    rounding: str = "floor",
    transform: FrameTransform | None = None,
    frame_range: tuple[int, int] | None = None,
) -> EncoderInput:
    """``num_frames`` frames spread over the video, at virtual frames ``linspace(0, 63, num_frames)``
    (rounded down as in the model card, or to nearest as in the release's probe: ``rounding``).
    ``transform`` maps the decoded uint8 frames ``[T, H, W, 3]`` before preprocessing (augmentation);
    ``frame_range`` ``(start, end)`` spreads the frames over that clip of the video."""
    frame_ids, frames = read_sampled_frames(path, num_frames, frame_range=frame_range)
    if transform is not None:
        frames = list(transform(np.stack(frames)))
    clip = processor(videos=[frames])["pixel_values"][0]
    hp, wp = (side // processor.patch_size for side in clip.shape[-2:])
    indices = chunk_visible_indices(frame_positions(num_frames, temporal_size, rounding), (hp, wp))
    positions = indices_to_positions(indices, (hp, wp)).numpy().astype(np.int32)
    return EncoderInput(name or str(path), "chunk", clip, indices, positions, frame_ids)


def codec_input(
    path: str | os.PathLike[str],
    num_patches: int,
    patch_size: int,
    name: str | None = None,
    transform: FrameTransform | None = None,
    **options: object,
) -> EncoderInput:
    """K codec-selected patches of 64 frames (encoder preset), as a mosaic when K fills whole frames.
    ``transform`` maps the kept uint8 frames ``[T, H, W, 3]`` after they were scored (augmentation)."""
    selection = select_patches(path, num_patches=num_patches, patch_size=patch_size, keep_frames=True, **options)
    if transform is not None:
        selection = dataclasses.replace(selection, frames=transform(selection.frames))
    return selection_input(selection, name or str(path))


def selection_input(selection: CodecSelection, name: str, clip: torch.Tensor | None = None) -> EncoderInput:
    """A selection's patches as model input: the K patches re-tiled into a mosaic when they fill whole
    frames, else the clip with its indices. ``clip`` ``[3, T, H, W]`` defaults to the frames the selection kept."""
    clip = selection.pixel_values() if clip is None else clip[None]
    indices = torch.from_numpy(selection.visible_indices)[None]
    if selection.num_patches % (selection.grid[1] * selection.grid[2]) == 0:
        clip, indices = mosaic(clip, indices, selection.patch_size)
    return EncoderInput(name, "codec", clip[0], indices[0], selection.positions_thw, selection.frame_ids)


@torch.inference_mode()
def encode_batch(
    model: OneVisionEncoderModel, samples: list[EncoderInput], layer: int | None = None, pooled: bool = False
) -> list[np.ndarray]:
    """Features of samples sharing a :meth:`EncoderInput.batch_key`: ``[N, D]`` token features (the last
    hidden state, or ``hidden_states[layer]``), or ``[D]`` pooled features with ``pooled``."""
    if len({s.batch_key() for s in samples}) != 1:
        raise ValueError("samples of one batch must share mode and shapes")
    if pooled and not model.config.use_head:
        raise ValueError("--pooled needs a model with a pooling head (this checkpoint has use_head=false)")
    parameter = next(model.parameters())
    pixels = torch.stack([s.pixel_values for s in samples]).to(parameter.device, parameter.dtype)
    indices = None
    if samples[0].visible_indices is not None:
        indices = torch.stack([s.visible_indices for s in samples]).to(parameter.device)
    output = model(pixel_values=pixels, visible_indices=indices, output_hidden_states=layer is not None)
    if pooled:
        values = output.pooler_output
    elif layer is not None:
        count = len(output.hidden_states)
        if not -count <= layer < count:
            raise ValueError(f"--layer {layer} is out of range: the model has {count} hidden states")
        values = output.hidden_states[layer]
    else:
        values = output.last_hidden_state
    return [v.float().cpu().numpy() for v in values]
