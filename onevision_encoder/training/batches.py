"""Per-head batches, composed as the released model's training composed them:

* image head: random resized crop (area 0.7-1, aspect 0.8-1.25) and flip, at the head's resolution;
* OCR head: resize and centre crop, no flip;
* video head, split by the head's ratios (defaults: :class:`~.config.VideoSettings`): codec samples
  take their K selected patches of 64 frames re-tiled into a mosaic with the true positions; frame
  sampling takes one random frame of each of 8 bins (their patches, placed on the grid); collage
  stacks those 8 frames into one tall image. The frames fed to the model are the ``frame_ids`` the
  selection scored.

All randomness comes from each sample's own seed, so a batch is reproducible from the data position.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from ..codec import CodecSelection, select_patches
from ..codec.frames import read_frames, read_sampled_frames
from ..jobs.features import selection_input
from ..model.image_processing import OneVisionEncoderImageProcessor
from ..video import chunk_visible_indices
from ..video.media import open_image
from ..video.normalisation import normalise
from .config import VideoSettings
from .data import ManifestError, Sample

VIDEO_MODES = ("codec", "sampling", "collage")
BINS = 8


@dataclass
class HeadBatch:
    """One head's batch: one forward per entry of ``forwards``; ``labels`` follow their concatenated order."""

    head: str
    forwards: list[dict[str, torch.Tensor]]
    labels: torch.Tensor
    modes: list[str]

    def tokens(self, patch_size: int) -> int:
        """Tokens the encoder sees for this batch."""
        total = 0
        for inputs in self.forwards:
            if "visible_indices" in inputs:
                total += inputs["visible_indices"].numel()
            else:
                pixels = inputs["pixel_values"]
                total += pixels.shape[0] * math.prod(side // patch_size for side in pixels.shape[-2:])
        return total


def pad_labels(labels: list[tuple[int, ...]]) -> torch.Tensor:
    width = max(len(row) for row in labels)
    return torch.tensor([list(row) + [-1] * (width - len(row)) for row in labels], dtype=torch.long)


def random_resized_crop(
    image: Image.Image,
    size: int,
    rng: np.random.Generator,
    area: tuple[float, float] = (0.7, 1.0),
    aspect: tuple[float, float] = (0.8, 1.25),
) -> Image.Image:
    width, height = image.size
    for _ in range(10):
        target = rng.uniform(*area) * width * height
        ratio = math.exp(rng.uniform(math.log(aspect[0]), math.log(aspect[1])))
        crop_w, crop_h = round(math.sqrt(target * ratio)), round(math.sqrt(target / ratio))
        if 0 < crop_w <= width and 0 < crop_h <= height:
            left = int(rng.integers(0, width - crop_w + 1))
            top = int(rng.integers(0, height - crop_h + 1))
            return image.resize((size, size), Image.Resampling.BICUBIC, box=(left, top, left + crop_w, top + crop_h))
    side = min(width, height)
    box = ((width - side) // 2, (height - side) // 2, (width + side) // 2, (height + side) // 2)
    return image.resize((size, size), Image.Resampling.BICUBIC, box=box)


def _open_image(sample: Sample) -> Image.Image:
    try:
        return open_image(sample.path)
    except ValueError as error:  # names the file; add the manifest line
        raise ManifestError(f"{sample.source}: {error}") from None


def image_batch(picks: list[tuple[Sample, int]], resolution: int) -> HeadBatch:
    """Image head: random resized crop and horizontal flip."""
    pixels = []
    for sample, seed in picks:
        rng = np.random.default_rng(seed)
        image = random_resized_crop(_open_image(sample), resolution, rng)
        if rng.random() < 0.5:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        pixels.append(normalise(np.asarray(image)))
    labels = pad_labels([s.labels for s, _ in picks])
    return HeadBatch("image", [{"pixel_values": torch.stack(pixels)}], labels, ["image"] * len(picks))


def ocr_batch(picks: list[tuple[Sample, int]], resolution: int) -> HeadBatch:
    """OCR head: resize and centre crop (text must stay whole and unmirrored)."""
    processor = OneVisionEncoderImageProcessor(
        size={"shortest_edge": resolution}, crop_size={"height": resolution, "width": resolution}
    )
    pixels = processor(images=[_open_image(s) for s, _ in picks])["pixel_values"]
    labels = pad_labels([s.labels for s, _ in picks])
    return HeadBatch("ocr", [{"pixel_values": pixels}], labels, ["ocr"] * len(picks))


def split_counts(total: int, ratios: dict[str, float]) -> dict[str, int]:
    """Largest-remainder split of ``total`` by ``ratios`` (in :data:`VIDEO_MODES` order)."""
    weights = np.array([ratios.get(mode, 0.0) for mode in VIDEO_MODES], dtype=np.float64)
    if (weights < 0).any() or weights.sum() <= 0:
        raise ValueError(f"video ratios must be non-negative and not all zero, got {ratios}")
    exact = weights / weights.sum() * total
    counts = np.floor(exact).astype(int)
    for index in np.argsort(-(exact - counts), kind="stable")[: total - counts.sum()]:
        counts[index] += 1
    return dict(zip(VIDEO_MODES, counts.tolist(), strict=True))


def video_batch(picks: list[tuple[Sample, int]], settings: VideoSettings) -> HeadBatch:
    """Video head: codec mosaics, bin-sampled frames and collages, grouped into one forward per shape."""
    counts = split_counts(len(picks), dict(settings.ratios))
    modes = [mode for mode in VIDEO_MODES for _ in range(counts[mode])]
    processor = OneVisionEncoderImageProcessor(
        video_size={"shortest_edge": settings.resolution},
        video_crop_size={"height": settings.resolution, "width": settings.resolution},
    )
    grid = (settings.resolution // settings.patch_size,) * 2
    entries = []
    for (sample, seed), mode in zip(picks, modes, strict=True):
        if mode == "codec":
            entries.append(_codec_entry(sample, settings, processor))
        else:
            entries.append(_sampled_entry(sample, seed, mode, settings, processor, grid))
    groups: dict[tuple, list[int]] = {}
    for index, entry in enumerate(entries):
        key = (tuple(entry["pixel_values"].shape), "visible_indices" in entry)
        groups.setdefault(key, []).append(index)
    forwards, order = [], []
    for members in groups.values():
        forward = {"pixel_values": torch.stack([entries[i]["pixel_values"] for i in members])}
        if "visible_indices" in entries[members[0]]:
            forward["visible_indices"] = torch.stack([entries[i]["visible_indices"] for i in members])
        forwards.append(forward)
        order.extend(members)
    labels = pad_labels([picks[i][0].labels for i in order])
    return HeadBatch("video", forwards, labels, [modes[i] for i in order])


def _clip(sample: Sample, processor: OneVisionEncoderImageProcessor, read: Callable[[], list]) -> torch.Tensor:
    """``read()``'s frames as a preprocessed clip ``[3, T, H, W]``; a video error gets the manifest line."""
    try:
        frames = read()
    except Exception as error:  # a video error names the file; add the manifest line
        raise ManifestError(f"{sample.source}: {error}") from None
    return processor(videos=[frames])["pixel_values_videos"][0]


def _codec_entry(
    sample: Sample, settings: VideoSettings, processor: OneVisionEncoderImageProcessor
) -> dict[str, torch.Tensor]:
    grid = (settings.num_frames, settings.resolution // settings.patch_size, settings.resolution // settings.patch_size)
    if sample.selection is not None:
        selection = CodecSelection.load(sample.selection, grid=grid)
        if selection.grid != grid or selection.num_patches != settings.num_patches:
            raise ManifestError(
                f"{sample.source}: selection {sample.selection} is {selection.num_patches} patches of a "
                f"{selection.grid} grid; the video head expects {settings.num_patches} of {grid}"
            )
        # A selection made with allow_truncated reads the frames the file holds, as its selection did.
        truncated = bool(selection.meta.get("video", {}).get("truncated"))
        clip = _clip(sample, processor, lambda: read_frames(sample.path, selection.frame_ids, truncated))
    else:  # no precomputed selection: select now, on the very frames that are then used
        try:
            selection = select_patches(
                sample.path,
                num_patches=settings.num_patches,
                num_frames=settings.num_frames,
                patch_size=settings.patch_size,
                size=settings.resolution,
                keep_frames=True,
            )
        except Exception as error:
            raise ManifestError(f"{sample.source}: {error}") from None
        clip = selection.pixel_values()[0]
    sample_input = selection_input(selection, sample.source, clip)
    return {"pixel_values": sample_input.pixel_values, "visible_indices": sample_input.visible_indices}


def bin_slots(seed: int, num_frames: int) -> np.ndarray:
    """One random slot in each of 8 equal bins of the ``num_frames`` sampled frames."""
    width = num_frames // BINS
    rng = np.random.default_rng(seed)
    return np.arange(BINS) * width + rng.integers(0, width, BINS)


def _sampled_entry(
    sample: Sample,
    seed: int,
    mode: str,
    settings: VideoSettings,
    processor: OneVisionEncoderImageProcessor,
    grid: tuple[int, int],
) -> dict[str, torch.Tensor]:
    slots = bin_slots(seed, settings.num_frames)
    clip = _clip(sample, processor, lambda: read_sampled_frames(sample.path, settings.num_frames, slots)[1])
    if mode == "sampling":
        return {"pixel_values": clip, "visible_indices": chunk_visible_indices(torch.from_numpy(slots), grid)}
    channels, frames, height, width = clip.shape
    return {"pixel_values": clip.reshape(channels, frames * height, width)}  # frames stacked top to bottom
