"""Frozen features of clips, per mode, computed once and cached on disk.

Modes at equal token budgets: ``chunk`` (8 or 16 frames on the 64-frame grid, 256 tokens each),
``codec`` (K = 2048 or 4096 codec-selected patches of 64 frames) and ``baseline`` (any transformers
image encoder, loaded as :mod:`.teacher` loads the concept teacher: each frame encoded alone, a
sinusoidal temporal embedding added per frame, tokens concatenated). ``view`` >= 1 encodes a
colour-jittered view of each clip (the release's probe training augmentation). Extraction is split
over the processes of a torchrun group by cache part, each clip exactly once, and every process
writes its parts into the shared cache folder.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from ..codec.frames import read_sampled_frames
from ..common.distributed import agree, rank_world
from ..common.progress import report_progress
from ..jobs.feature_store import CLIPS_PER_PART, FORMAT, FeatureStore, model_identity
from ..jobs.features import chunk_input, codec_input
from ..model import OneVisionEncoderImageProcessor, OneVisionEncoderModel
from .augment import ColorJitter, view_rng
from .datasets import Clip
from .teacher import load_teacher

MODES = ("chunk", "codec", "baseline")
TRAIN_JITTER = ColorJitter()  # the release's probe training augmentation (p = 0.8)


@dataclass(frozen=True)
class FeatureSpec:
    """Everything that determines a clip's features; its hash keys the cache."""

    model: str
    mode: str = "chunk"
    frames: int = 8
    num_patches: int = 2048
    resolution: int = 224
    dtype: str = "float32"
    view: int = 0  # 0: the clip as it is; v >= 1: its v-th colour-jittered view

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.view < 0:
            raise ValueError(f"view must be >= 0, got {self.view}")

    def key(self, clips: list[Clip]) -> str:
        identity = {**asdict(self), "model": model_identity(self.model), "clips": [c.key() for c in clips]}
        identity["format"] = FORMAT  # caches of an older part format are extracted again, not misread
        return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:20]


def sinusoidal_embedding(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """Transformer sinusoidal embedding ``[len(positions), dim]`` (sin on even, cos on odd channels)."""
    half = torch.arange(0, dim, 2, dtype=torch.float32)
    angles = positions.float()[:, None] / (10000 ** (half / dim))[None, :]
    embedding = torch.zeros(len(positions), dim)
    embedding[:, 0::2] = angles.sin()
    embedding[:, 1::2] = angles.cos()[:, : embedding[:, 1::2].shape[1]]
    return embedding


class FeatureExtractor:
    """Token features ``[N, D]`` of one clip for a :class:`FeatureSpec`."""

    def __init__(self, spec: FeatureSpec, device: str | torch.device = "cpu") -> None:
        self.spec = spec
        self.device = torch.device(device)
        self.dtype = getattr(torch, spec.dtype)
        if spec.mode == "baseline":
            self._load_baseline()
        else:
            self.model = OneVisionEncoderModel.from_pretrained(spec.model, dtype=self.dtype).to(self.device).eval()
            self.processor = OneVisionEncoderImageProcessor(
                video_size={"shortest_edge": spec.resolution},
                video_crop_size={"height": spec.resolution, "width": spec.resolution},
                patch_size=self.model.config.patch_size,
            )

    def _load_baseline(self) -> None:
        model, self.processor = load_teacher(self.spec.model, str(self.device), self.dtype)
        self.model = getattr(model, "vision_model", model)  # the image tower of a CLIP-like model: its tokens

    def augment(self, path: Path, frames: np.ndarray) -> np.ndarray:
        """The spec's view of a clip's uint8 frames ``[T, H, W, 3]`` (unchanged for view 0)."""
        if self.spec.view == 0:
            return frames
        return TRAIN_JITTER(frames, view_rng(str(path), self.spec.view))

    @torch.inference_mode()
    def __call__(self, path: Path, frame_range: tuple[int, int] | None = None) -> torch.Tensor:
        """The clip's token features ``[N, D]`` (``frame_range``: a clip of the video, frames start:end)."""
        spec = self.spec
        if spec.mode == "baseline":
            return self._baseline(path, frame_range)
        transform = partial(self.augment, path)
        if spec.mode == "chunk":
            sample = chunk_input(
                path, spec.frames, self.processor, rounding="round", transform=transform, frame_range=frame_range
            )
        else:
            patch_size = self.model.config.patch_size
            sample = codec_input(
                path, spec.num_patches, patch_size, transform=transform, size=spec.resolution, frame_range=frame_range
            )
        output = self.model(
            pixel_values=sample.pixel_values[None].to(self.device, self.dtype),
            visible_indices=sample.visible_indices[None].to(self.device),
            output_pooler=False,
        )
        return output.last_hidden_state[0].cpu()

    def _baseline(self, path: Path, frame_range: tuple[int, int] | None) -> torch.Tensor:
        _, frames = read_sampled_frames(path, self.spec.frames, frame_range=frame_range)
        frames = list(self.augment(path, np.stack(frames)))
        pixels = self.processor(images=frames, return_tensors="pt")["pixel_values"]
        tokens = self.model(pixel_values=pixels.to(self.device, self.dtype)).last_hidden_state.float().cpu()
        tokens = tokens + sinusoidal_embedding(torch.arange(len(frames)), tokens.shape[-1])[:, None, :]
        return tokens.reshape(-1, tokens.shape[-1]).to(self.dtype)


def cached_features(
    spec: FeatureSpec,
    clips: list[Clip],
    cache: Path,
    device: str | torch.device = "cpu",
    name: str = "features",
    clips_per_part: int = CLIPS_PER_PART,
) -> tuple[FeatureStore, bool]:
    """The features of ``clips`` in a :class:`FeatureStore` under ``cache``; returns (store, was_cached).

    Only missing parts are extracted, so an interrupted extraction resumes. Under torchrun process
    ``r`` extracts the parts ``r::world`` (the cache folder must be shared by all processes); every
    clip is encoded exactly once.
    """
    folder = Path(cache) / f"{name}-{spec.mode}-{spec.key(clips)}-{clips_per_part}per"
    store = FeatureStore(folder, len(clips), clips_per_part)
    missing = agree(store.missing_parts())  # one decision, though other processes may be writing already
    if not missing:
        return store, True
    rank, world = rank_world()
    mine = [part for part in missing if part % world == rank]
    if rank == 0:  # the index a FeatureStore.open of this folder reads, as for `onevision encode`'s folders
        FeatureStore.create(folder, asdict(spec), [(str(c.path), c.key()) for c in clips], clips_per_part)
    if mine:
        extractor = FeatureExtractor(spec, device)
        total = sum(len(store.part_rows(part)) for part in mine)
        with report_progress(total, f"{name} ({spec.mode})", "clip", enabled=rank == 0) as progress:
            for part in mine:
                features = []
                for index in store.part_rows(part):
                    try:
                        features.append(extractor(clips[index].path, clips[index].frame_range))
                    except Exception as error:  # a bad clip names its list line
                        raise ValueError(f"{clips[index].where}: {error}") from None
                    progress.update()
                store.write_part(part, torch.stack(features))
    if world > 1:
        dist.barrier()
    return store, False
