"""Training configuration: a YAML file mapped onto dataclasses; unknown keys are errors."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..common.config_files import read_mapping, settings_from


@dataclass
class ModelSettings:
    pretrained: str | None = None  # checkpoint folder or hub id to start from
    config: dict[str, Any] = field(default_factory=dict)  # OneVisionEncoderConfig overrides (or a fresh model)
    preset: str = "large"
    activation_checkpointing: bool = False


@dataclass(frozen=True)
class VideoSettings:
    """What the video head's batches are made with; the defaults are the release's (its clips are 224 px)."""

    resolution: int = 224
    patch_size: int = 14
    num_frames: int = 64
    num_patches: int = 2048
    ratios: tuple[tuple[str, float], ...] = (("codec", 0.5), ("sampling", 0.375), ("collage", 0.125))


@dataclass
class HeadSettings:
    num_classes: int = 1000
    batch_size: int = 16
    resolution: int = 448
    # video head only (defaults: VideoSettings')
    num_frames: int = VideoSettings.num_frames
    num_patches: int = VideoSettings.num_patches
    ratios: dict[str, float] = field(default_factory=lambda: dict(VideoSettings.ratios))

    def video(self, patch_size: int) -> VideoSettings:
        """The video head's batch settings for a model of ``patch_size``."""
        return VideoSettings(self.resolution, patch_size, self.num_frames, self.num_patches, tuple(self.ratios.items()))


@dataclass
class LossSettings:
    margin: float = 0.3
    scale: float = 64.0
    sample_rate: float = 0.1
    num_labels: int | None = 8
    filter_threshold: float | None = 0.75


@dataclass
class OptimSettings:
    lr: float = 5e-5
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.999)
    centre_lr_scale: float = 1.0
    centre_weight_decay: float = 0.0
    warmup_steps: int = 0
    power: float = 2.0
    min_lr: float = 0.0
    grad_clip: float | None = 5.0
    accumulation: int = 1


@dataclass
class DataSettings:
    manifest: str = ""  # JSONL manifest, a .tar shard, or a folder of .tar shards
    # A synthetic set: generated beside the manifest when it is missing, or, without a manifest, into the run's
    # folder (OUT/synthetic-data/).
    synthetic: dict[str, Any] | None = None
    workers: int = 0  # processes building batches ahead of the step (0: in the training process)
    prefetch: int = 2  # batches each worker builds ahead


@dataclass
class TrainSettings:
    max_steps: int = 1000
    seed: int = 0
    bf16: bool = False
    fsdp: bool = False  # shard the backbone's parameters, gradients and AdamW state (FSDP2) instead of DDP
    log_every: int = 10
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    tensorboard: bool = False


@dataclass
class TrainConfig:
    model: ModelSettings = field(default_factory=ModelSettings)
    data: DataSettings = field(default_factory=DataSettings)
    heads: dict[str, HeadSettings] = field(default_factory=dict)
    loss: LossSettings = field(default_factory=LossSettings)
    optim: OptimSettings = field(default_factory=OptimSettings)
    train: TrainSettings = field(default_factory=TrainSettings)
    source: Path | None = None  # the YAML file; relative paths are relative to its folder

    def resolve(self, path: str) -> Path:
        candidate = Path(path)
        if candidate.is_absolute() or self.source is None:
            return candidate
        return self.source.parent / candidate

    def as_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["source"] = str(self.source) if self.source else None
        return data


def _head(name: str, values: Any, where: str) -> HeadSettings:
    """Head settings; the video head defaults to :class:`VideoSettings`' resolution, the others to 448."""
    values = dict(values or {})
    if name == "video":
        values.setdefault("resolution", VideoSettings.resolution)
    return settings_from(HeadSettings, values, where)


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Read a YAML training config; ``overrides`` like ``{"train.max_steps": 10}`` win over the file."""
    path = Path(path)
    raw = read_mapping(path)
    for dotted, value in (overrides or {}).items():
        section, key = dotted.split(".", 1)
        raw.setdefault(section, {})[key] = value
    unknown = sorted(set(raw) - {"model", "data", "heads", "loss", "optim", "train"})
    if unknown:
        raise ValueError(f"{path}: unknown section(s) {unknown}")
    heads = raw.get("heads") or {}
    bad_heads = sorted(set(heads) - {"image", "ocr", "video"})
    if bad_heads or not heads:
        raise ValueError(f"{path}: heads must be some of image, ocr, video; got {sorted(heads) or 'none'}")
    config = TrainConfig(
        model=settings_from(ModelSettings, raw.get("model"), f"{path}: model"),
        data=settings_from(DataSettings, raw.get("data"), f"{path}: data"),
        heads={name: _head(name, values, f"{path}: heads.{name}") for name, values in heads.items()},
        loss=settings_from(LossSettings, raw.get("loss"), f"{path}: loss"),
        optim=settings_from(OptimSettings, raw.get("optim"), f"{path}: optim"),
        train=settings_from(TrainSettings, raw.get("train"), f"{path}: train"),
        source=path.resolve(),
    )
    if not config.data.manifest and config.data.synthetic is None:
        raise ValueError(f"{path}: data.manifest is required (or data.synthetic, generated into the run's folder)")
    if config.data.workers < 0 or config.data.prefetch < 1:
        raise ValueError(f"{path}: data.workers must be >= 0 and data.prefetch >= 1")
    return config
