"""Stage-2 training of the LMM probe with transformers' ``Trainer`` (``onevision lmm-train``).

The config is a YAML file of four sections:

- ``model``: ``pretrained`` (a OneVisionLlava folder or hub id with its processor, to continue from), or
  ``encoder`` + ``language_model`` (folders or hub ids: a new LMM, the projector random, the placeholders added
  to the LM's tokenizer when missing); ``dtype``, the tower settings and the processor's;
- ``train``: which parts learn (``vision_tower``, ``projector``, ``language_model``; the others are frozen) and,
  optionally, a part's own learning rate (``vision_tower_lr``, ``projector_lr``, ``language_model_lr``; by
  default ``trainer.learning_rate``);
- ``data``: the conversation files (``preprocess --pack --conversations`` output, plain image conversations),
  ``max_length`` and an optional ``chat_template``;
- ``trainer``: ``TrainingArguments`` fields as they are (batch size, learning rate, steps, saving, logging,
  ``bf16``, ``gradient_checkpointing``, ``fsdp``, ``deepspeed``, ...), so torchrun, FSDP and DeepSpeed come
  from transformers.

The run folder holds the Trainer's ``checkpoint-N/`` folders, ``metrics.jsonl`` (one line per log),
``skipped.jsonl`` (the items left out, each as it is found: over ``data.max_length``) and, at the end,
``final/``: the model and its processor, loadable with ``from_pretrained``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..common.config_files import read_mapping, settings_from
from ..common.files import atomic_write, replace_folder
from .modeling import PART_MODULES

CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
METRICS_FILE = "metrics.jsonl"
SKIPPED_FILE = "skipped.jsonl"
FINAL_FOLDER = "final"
STAGING_FOLDER = ".final.tmp"  # final/ as it is being saved
DTYPES = ("float32", "bfloat16", "float16")


@dataclass
class LmmModelSettings:
    pretrained: str | None = None  # a OneVisionLlava folder or hub id, with its processor
    encoder: str | None = None  # or a new LMM: an encoder folder or hub id ...
    language_model: str | None = None  # ... and a causal LM folder or hub id
    tokenizer: str | None = None  # the LM's tokenizer, if not in the language_model folder
    dtype: str | None = None  # float32, bfloat16 or float16 for loading; None: as saved
    vision_feature_layer: int = -2
    spatial_merge: int = 2
    projector_hidden_size: int | None = None
    image_token: str = "<image>"
    video_token: str = "<video>"
    image_processor: dict[str, Any] = field(default_factory=dict)  # OneVisionEncoderImageProcessor settings
    video_selection: dict[str, Any] = field(default_factory=dict)  # select_patches keywords for video files


@dataclass
class LmmTrainParts:
    vision_tower: bool = True
    projector: bool = True
    language_model: bool = True
    vision_tower_lr: float | None = None  # a part's own learning rate; None: trainer.learning_rate
    projector_lr: float | None = None
    language_model_lr: float | None = None

    def rates(self) -> dict[str, float]:
        """The parts given their own learning rate, with it."""
        return {part: rate for part in PART_MODULES if (rate := getattr(self, f"{part}_lr")) is not None}


@dataclass
class LmmDataSettings:
    conversations: list[Any] = field(default_factory=list)  # paths, or {path, image_folder} mappings
    max_length: int | None = None
    chat_template: str | None = None  # None: the tokenizer's own, or a plain one if it has none


@dataclass
class LmmConfig:
    model: LmmModelSettings
    train: LmmTrainParts
    data: LmmDataSettings
    trainer: dict[str, Any]
    source: Path


class LmmConfigError(ValueError):
    """A ``trainer`` section that ``TrainingArguments`` refuses: the message names the file."""


def load_lmm_config(path: str | Path, max_steps: int | None = None) -> LmmConfig:
    """Read and check an ``lmm-train`` YAML config; ``max_steps`` wins over ``trainer.max_steps``.

    Relative paths in ``model`` and ``data`` that exist relative to the file's folder are taken from there.
    Every problem is a ``ValueError`` naming the file and the key.
    """
    path = Path(path)
    raw = read_mapping(path)
    unknown = sorted(set(raw) - {"model", "train", "data", "trainer"})
    if unknown:
        raise ValueError(f"{path}: unknown section(s) {unknown}; known: data, model, train, trainer")
    if not isinstance(raw.get("trainer") or {}, dict):
        raise ValueError(f"{path}: trainer: expected a mapping of TrainingArguments fields")
    config = LmmConfig(
        model=settings_from(LmmModelSettings, raw.get("model"), f"{path}: model"),
        train=settings_from(LmmTrainParts, raw.get("train"), f"{path}: train"),
        data=settings_from(LmmDataSettings, raw.get("data"), f"{path}: data"),
        trainer=dict(raw.get("trainer") or {}),
        source=path.resolve(),
    )
    model, data = config.model, config.data
    if (model.pretrained is None) == (model.encoder is None or model.language_model is None):
        raise ValueError(f"{path}: model needs either pretrained, or both encoder and language_model")
    if model.pretrained is not None and (model.encoder or model.language_model):
        raise ValueError(f"{path}: model.pretrained excludes model.encoder and model.language_model")
    if model.dtype is not None and model.dtype not in DTYPES:
        raise ValueError(f"{path}: model.dtype must be one of {DTYPES}, got {model.dtype!r}")
    if not any(getattr(config.train, part) for part in PART_MODULES):
        raise ValueError(f"{path}: train freezes every part (vision_tower, projector, language_model): nothing learns")
    for part in PART_MODULES:
        setattr(config.train, f"{part}_lr", _learning_rate(config.train, part, path))
    if not data.conversations:
        raise ValueError(f"{path}: data.conversations lists no file")
    if data.max_length is not None and data.max_length < 1:
        raise ValueError(f"{path}: data.max_length must be >= 1")
    if model.pretrained is not None and model.tokenizer is not None:
        raise ValueError(f"{path}: model.pretrained brings its processor's tokenizer: leave out model.tokenizer")
    for name in ("pretrained", "encoder", "language_model", "tokenizer"):
        setattr(model, name, _local(config, getattr(model, name)))
    if "output_dir" in config.trainer:
        raise ValueError(f"{path}: trainer.output_dir is the command's --out")
    if max_steps is not None:
        config.trainer["max_steps"] = max_steps
    return config


def _learning_rate(train: LmmTrainParts, part: str, path: Path) -> float | None:
    key = f"{part}_lr"
    value = getattr(train, key)
    if value is None:
        return None
    try:
        rate = float(value)  # YAML reads 2e-6 (no decimal point) as a string
    except (TypeError, ValueError):
        rate = float("nan")
    if isinstance(value, bool) or not rate > 0:
        raise ValueError(f"{path}: train.{key} must be a positive number, got {value!r}")
    if not getattr(train, part):
        raise ValueError(f"{path}: train.{key} is set but train.{part} is false: a frozen part does not learn")
    return rate


def _local(config: LmmConfig, name: str | None) -> str | None:
    """A path relative to the config's folder when it exists there; otherwise as given (a hub id, or a path
    relative to the working folder)."""
    if name is None or Path(name).is_absolute():
        return name
    beside = config.source.parent / name
    return str(beside) if beside.exists() else name


def conversation_sources(config: LmmConfig) -> list[Any]:
    """The ``data.conversations`` entries as :class:`ConversationSource`, paths relative to the config's folder."""
    from .data import ConversationSource

    def resolve(value: str) -> Path:
        candidate = Path(os.path.expanduser(value))
        return candidate if candidate.is_absolute() else config.source.parent / candidate

    sources = []
    for number, entry in enumerate(config.data.conversations, 1):
        where = f"{config.source}: data.conversations entry {number}"
        if isinstance(entry, str):
            entry = {"path": entry}
        if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
            raise ValueError(f"{where}: a path, or a mapping with 'path' (and optionally 'image_folder')")
        unknown = sorted(set(entry) - {"path", "image_folder"})
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {unknown}; known: image_folder, path")
        folder = entry.get("image_folder")
        sources.append(ConversationSource(resolve(entry["path"]), resolve(folder) if folder else None))
    return sources


def build_model_and_processor(config: LmmConfig) -> tuple[Any, Any]:
    """The LMM and its processor, as ``config.model`` says; the parts not in ``config.train`` frozen."""
    import torch

    from ..model.image_processing import OneVisionEncoderImageProcessor
    from .data import PLAIN_CHAT_TEMPLATE
    from .modeling import OneVisionLlavaForConditionalGeneration
    from .processing import OneVisionLlavaProcessor

    settings = config.model
    dtype = getattr(torch, settings.dtype) if settings.dtype else None
    load = {"dtype": dtype} if dtype else {}
    if settings.pretrained is not None:
        processor = OneVisionLlavaProcessor.from_pretrained(settings.pretrained)
        model = OneVisionLlavaForConditionalGeneration.from_pretrained(settings.pretrained, **load)
    else:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from ..model.modeling import OneVisionEncoderModel

        tokenizer = AutoTokenizer.from_pretrained(settings.tokenizer or settings.language_model)
        missing = [t for t in (settings.image_token, settings.video_token) if t not in tokenizer.get_vocab()]
        tokenizer.add_tokens(missing, special_tokens=True)  # one token each, never split
        encoder = OneVisionEncoderModel.from_pretrained(settings.encoder, **load)
        language_model = AutoModelForCausalLM.from_pretrained(settings.language_model, **load)
        if len(tokenizer) > language_model.get_input_embeddings().num_embeddings:
            language_model.resize_token_embeddings(len(tokenizer))
        image_processor = OneVisionEncoderImageProcessor(
            **{"mode": "native", "patch_size": encoder.config.patch_size, **settings.image_processor}
        )
        processor = OneVisionLlavaProcessor(
            image_processor,
            tokenizer,
            image_token=settings.image_token,
            video_token=settings.video_token,
            spatial_merge=settings.spatial_merge,
            video_selection=settings.video_selection,
        )
        model = OneVisionLlavaForConditionalGeneration.from_encoder_and_lm(
            encoder,
            language_model,
            image_token_id=processor.image_token_id,
            video_token_id=processor.video_token_id,
            dtype=dtype,
            vision_feature_layer=settings.vision_feature_layer,
            spatial_merge=settings.spatial_merge,
            projector_hidden_size=settings.projector_hidden_size,
        )
    tokenizer = processor.tokenizer
    if config.data.chat_template is not None:
        tokenizer.chat_template = config.data.chat_template
    elif tokenizer.chat_template is None:
        tokenizer.chat_template = PLAIN_CHAT_TEMPLATE  # saved with the processor: generation prompts alike
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token  # padding is masked out of attention and loss
    if tokenizer.pad_token_id is None:
        raise ValueError("the tokenizer has neither a padding nor an end-of-sequence token to pad with")
    for part, attribute in PART_MODULES.items():
        getattr(model, attribute).requires_grad_(getattr(config.train, part))
    for module in model.unused_vision_modules():
        module.requires_grad_(False)
    return model, processor


class RunFolderError(ValueError):
    """The run folder holds a run that the options do not say what to do with."""


def checkpoints(out: Path) -> list[Path]:
    """The Trainer's complete checkpoints in ``out``, oldest first (a checkpoint is complete once its
    ``trainer_state.json``, written last, is there)."""
    if not out.is_dir():
        return []
    found = [(int(m[1]), p) for p in out.iterdir() if (m := CHECKPOINT.match(p.name)) and p.is_dir()]
    return [path for _, path in sorted(found) if (path / "trainer_state.json").is_file()]


def claim_run_folder(out: Path, resume: bool, overwrite: bool) -> Path | None:
    """What becomes of an earlier run in ``out``: the checkpoint to resume from (``resume``), its outputs
    deleted (``overwrite``: checkpoint folders, ``final/``, ``metrics.jsonl`` and ``skipped.jsonl`` only), or
    refused."""
    if resume and overwrite:
        raise RunFolderError("--resume and --overwrite exclude each other")
    found = [p for p in (out.iterdir() if out.is_dir() else []) if CHECKPOINT.match(p.name) and p.is_dir()]
    found += [out / name for name in (FINAL_FOLDER, METRICS_FILE, SKIPPED_FILE) if (out / name).exists()]
    if resume:
        complete = checkpoints(out)
        if not complete:
            raise RunFolderError(f"{out}: --resume given but it holds no complete checkpoint-N folder")
        return complete[-1]
    if found and not overwrite:
        names = ", ".join(sorted(p.name for p in found))
        raise RunFolderError(
            f"{out} already holds a run ({names}): add --resume to continue it, or --overwrite to delete it"
        )
    for path in found:
        shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
    return None


def metrics_callback(out: Path) -> Any:
    """A ``TrainerCallback`` appending each log (step, loss, learning rate, ...) to ``out/metrics.jsonl``; on
    resume the lines after the checkpoint's step (logged by the run that stopped) are dropped first."""
    from transformers import TrainerCallback

    path = out / METRICS_FILE

    class MetricsLog(TrainerCallback):
        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.is_world_process_zero and path.is_file():
                kept = [line for line in path.read_text().splitlines() if json.loads(line)["step"] <= state.global_step]
                atomic_write(path, "".join(line + "\n" for line in kept).encode())

        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any):
            if state.is_world_process_zero and logs:
                with path.open("a") as file:
                    file.write(json.dumps({"step": state.global_step, **logs}) + "\n")

    return MetricsLog()


def deepspeed_builds_optimiser(args: Any) -> bool:
    """Whether ``TrainingArguments`` hand the optimiser to DeepSpeed (its config has an ``optimizer``
    section), so that the Trainer's own (with the per-part learning rates) is never built."""
    deepspeed = getattr(args, "hf_deepspeed_config", None)  # set only when trainer.deepspeed is
    return deepspeed is not None and "optimizer" in deepspeed.config


def train_lmm(config: LmmConfig, out: Path, resume: bool = False, overwrite: bool = False) -> dict[str, Any]:
    """Train as ``config`` says into ``out``; returns the last logged metrics, with ``step`` and ``skipped`` (the
    number of items recorded in ``out/skipped.jsonl``)."""
    from transformers import TrainingArguments, set_seed

    from .data import ConversationCollator, ConversationDataset, SkippedItems
    from .trainer import PartRateTrainer

    sources = conversation_sources(config)
    arguments = {"logging_steps": 10, "report_to": "none", **config.trainer}
    try:
        args = TrainingArguments(output_dir=str(out), remove_unused_columns=False, **arguments)
    except (TypeError, ValueError) as error:
        raise LmmConfigError(f"{config.source}: trainer: {error}") from None
    part_rates = config.train.rates()
    if part_rates and deepspeed_builds_optimiser(args):
        raise LmmConfigError(
            f"{config.source}: train.*_lr: the DeepSpeed config's optimizer section makes DeepSpeed build the "
            "optimiser, which would ignore them; leave that section out (the Trainer then builds it, trainer.optim)"
        )
    with args.main_process_first(local=False, desc="the run folder"):
        # The main process settles the folder first; the others then find it settled (and resume alike).
        checkpoint = claim_run_folder(out, resume, overwrite and args.process_index == 0)
        if args.process_index == 0:
            shutil.rmtree(out / STAGING_FOLDER, ignore_errors=True)  # a save that a killed run left unfinished
    set_seed(args.seed)  # the new projector and placeholder embeddings: one run's numbers on every rerun
    model, processor = build_model_and_processor(config)
    skipped = SkippedItems(out / SKIPPED_FILE)
    dataset = ConversationDataset(sources, processor, config.data.max_length, skipped)
    trainer = PartRateTrainer(
        part_rates=part_rates,
        model=model,
        args=args,
        train_dataset=dataset,
        data_collator=ConversationCollator(processor.tokenizer.pad_token_id),
        processing_class=processor,
        callbacks=[metrics_callback(out)],
    )
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    # Every process saves (FSDP and DeepSpeed gather the weights in save_model) into one staging folder, which
    # the main process then puts in place of final/ in one rename.
    staging = out / STAGING_FOLDER
    trainer.save_model(str(staging))
    if trainer.is_world_process_zero():
        processor.save_pretrained(str(staging))
        replace_folder(staging, out / FINAL_FOLDER)
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    return {"step": trainer.state.global_step, **(logs[-1] if logs else {}), "skipped": len(skipped.items())}
