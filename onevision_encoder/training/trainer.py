"""The training loop: one process or many under ``torchrun`` (DDP or FSDP; gloo on CPU, NCCL on GPU).

Each step, every head builds its batch, runs its forwards, and the cluster-discrimination losses
are summed for one backward (gradient accumulation over ``optim.accumulation`` micro-batches).
Backbone gradients are summed, not averaged, across processes: each process holds the gradient
flowing through its own samples of the one global loss, so the sum is that loss's gradient.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import yaml
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from ..common.distributed import agree, rank_world, setup_distributed
from ..common.files import atomic_directory
from ..model import OneVisionEncoderConfig, OneVisionEncoderImageProcessor, OneVisionEncoderModel
from .checkpoint import (
    CHECKPOINTS,
    RUN_FILES,
    RunFiles,
    clean_partial,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from .config import TrainConfig
from .data import HEADS, HeadStream, read_manifest, sample_seed, split_by_head
from .loader import BatchLoader
from .loss import ClusterDiscriminationLoss
from .schedule import learning_rate_factor
from .sharding import is_sharded, load_whole_state, rank_rows, shard_model, whole_state
from .synthetic import SYNTHETIC_FOLDER, make_synthetic_dataset, synthetic_dataset

# Where a run writes in its folder; `overwrite` deletes there the files the run listed (RunFiles), nothing else.
RUN_OUTPUTS = (CHECKPOINTS, "final", "metrics.jsonl", "tensorboard")


class PreviousRunError(FileExistsError):
    """The run folder already holds a run, and neither resuming nor overwriting it was asked for."""

    def __init__(self, out: Path, found: list[str]) -> None:
        self.out, self.found = out, found
        super().__init__(
            f"{out} already holds a training run ({', '.join(found)}): pass resume=True to continue it, "
            "or overwrite=True to delete it and start again"
        )


def claim_run_folder(out: str | Path, resume: bool = False, overwrite: bool = False) -> None:
    """Settle what becomes of an earlier run in ``out``, before any work; every process calls this.

    Rank 0 looks and every process takes its answer, so all refuse together and only rank 0 deletes.
    An earlier run (any of :data:`RUN_OUTPUTS`) is continued (``resume``), deleted (``overwrite``: the
    files it listed in ``run-files.json`` and still holding what it wrote, :class:`~.checkpoint.RunFiles`)
    or refused with :class:`PreviousRunError`. A file there that the run did not write is never deleted:
    ``overwrite`` is then refused, and so is ``resume`` when it is in ``final/`` (which the run replaces
    when it exports), with a ``FileExistsError`` naming it. ``resume`` without a checkpoint is a
    ``FileNotFoundError``.
    """
    out = Path(out)
    if resume and overwrite:
        raise ValueError("resume and overwrite exclude each other: continue the run in the folder, or delete it")
    rank = rank_world()[0]
    run_files = RunFiles(out)
    seen = None
    if rank == 0:
        found = [name for name in RUN_OUTPUTS if (out / name).exists() or (out / name).is_symlink()]
        replaced = found if overwrite else ["final"] if resume and "final" in found else []
        foreign = [key for name in replaced for key in run_files.foreign(out / name)]
        seen = (found, foreign, run_files.is_foreign_record(), latest_checkpoint(out) is not None)
    found, foreign, foreign_record, has_checkpoint = agree(seen)
    if foreign_record:
        raise FileExistsError(f"{out} holds a {RUN_FILES} that is not a training run's record: choose another folder")
    if resume and not has_checkpoint:
        raise FileNotFoundError(f"{out}: --resume given but no checkpoint found")
    if found and not resume and not overwrite:
        raise PreviousRunError(out, found)
    if foreign:
        more = f" (and {len(foreign) - 1} more)" if len(foreign) > 1 else ""
        outcome = "not deleting anything" if overwrite else "final/ is replaced when the run exports its model"
        raise FileExistsError(
            f"{out} holds {foreign[0]}{more}, which training did not write: {outcome} (run-files.json lists what "
            f"it wrote); move it out of {out}, or choose another folder"
        )
    if found and overwrite:
        if rank == 0:
            for name in found:
                run_files.remove(out / name)
        if dist.is_initialized():
            dist.barrier()


# Unannotated on purpose: DDP rejects a hook whose annotations are strings (postponed evaluation).
def _sum_gradients(state, bucket):
    """DDP communication hook: all-reduce to the sum of the ranks' gradients (DDP's default averages)."""
    return dist.all_reduce(bucket.buffer(), async_op=True).get_future().then(lambda fut: fut.value()[0])


def build_model(config: TrainConfig) -> OneVisionEncoderModel:
    settings = config.model
    if settings.pretrained:
        model = OneVisionEncoderModel.from_pretrained(settings.pretrained, dtype=torch.float32)
    else:
        model = OneVisionEncoderModel(OneVisionEncoderConfig.from_preset(settings.preset, **settings.config))
    if not model.config.use_head:
        raise ValueError("training needs the pooling head: use a model with use_head=true")
    if settings.activation_checkpointing:
        # transformers 5 renamed it (the old name warns, to be removed in 6); 4.57 has only the old one.
        enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
        enable()
    return model.float()


def parameter_groups(
    model: torch.nn.Module, losses: dict[str, torch.nn.Module], config: TrainConfig
) -> list[dict[str, Any]]:
    """AdamW groups: decayed weights; norms, biases and the pooling probe without decay; the centres."""
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        if parameter.ndim < 2 or name.endswith(".bias") or "norm" in name or name.endswith("head.probe"):
            no_decay.append(parameter)
        else:
            decay.append(parameter)
    optim = config.optim
    return [
        {"params": decay, "weight_decay": optim.weight_decay, "lr": optim.lr, "name": "decay"},
        {"params": no_decay, "weight_decay": 0.0, "lr": optim.lr, "name": "no_decay"},
        {
            "params": [loss.weight for loss in losses.values()],
            "weight_decay": optim.centre_weight_decay,
            "lr": optim.lr * optim.centre_lr_scale,
            "name": "centres",
        },
    ]


def global_grad_norm(backbone: list[torch.nn.Parameter], centres: list[torch.nn.Parameter]) -> torch.Tensor:
    """Norm over every gradient of the run, added up in one fixed order whatever the sharding.

    Each gradient's squares are summed per rank's slice as FSDP2 lays it out (:func:`rank_rows`; a
    whole DDP gradient is cut here the same way, a sharded one is already that slice, the centres are
    each rank's rows), and the slices' sums are added in rank order, then in gradient order. So a DDP
    and an FSDP run clip by the bitwise same factor (adding the slices in another order than the whole
    tensor changed the last bit of the norm, and through clipping every weight).
    """
    rank, world = rank_world()
    grads = [p.grad for p in backbone if p.grad is not None]
    slices = [grad.to_local() if is_sharded(grad) else rank_rows(grad, rank, world) for grad in grads]
    slices += [p.grad for p in centres if p.grad is not None]
    mine = torch.stack([piece.float().pow(2).sum() for piece in slices])
    per_rank = [mine]
    if world > 1:
        per_rank = [torch.empty_like(mine) for _ in range(world)]
        dist.all_gather(per_rank, mine)
    total = per_rank[0]
    for part in per_rank[1:]:
        total = total + part
    return total.sum().sqrt()


def prepare_data(config: TrainConfig, rank: int, out: Path) -> Path:
    """The manifest to train on: ``data.manifest`` (generated beside it from ``data.synthetic`` when missing),
    or without one the ``data.synthetic`` set, generated into the run's own folder (``OUT/synthetic-data/``)."""
    synthetic = config.data.synthetic
    if config.data.manifest:
        manifest = config.resolve(config.data.manifest)
        if synthetic is not None and not manifest.exists() and rank == 0:
            make_synthetic_dataset(manifest.parent, **synthetic)
    else:
        manifest = out / SYNTHETIC_FOLDER / "manifest.jsonl"
        if rank == 0:
            synthetic_dataset(out / SYNTHETIC_FOLDER, synthetic)
    if synthetic is not None and dist.is_initialized():
        dist.barrier()  # every process reads what rank 0 generated
    return manifest


def train(
    config: TrainConfig,
    out: str | Path,
    max_steps: int | None = None,
    stop_after: int | None = None,
    resume: bool = False,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Train; returns the last logged metrics. ``max_steps`` sets the schedule's length, ``stop_after``
    ends the run after that many steps with a checkpoint (as an interruption would). A folder that
    already holds a run needs ``resume`` or ``overwrite`` (:func:`claim_run_folder`)."""
    out = Path(out)
    rank, world, device = setup_distributed()
    claim_run_folder(out, resume, overwrite)
    torch.manual_seed(config.train.seed)
    out.mkdir(parents=True, exist_ok=True)
    clean_partial(out)

    samples = split_by_head(read_manifest(prepare_data(config, rank, out)))
    missing = [head for head in config.heads if head not in samples]
    if missing:
        raise ValueError(f"the manifest has no sample for head(s) {missing}")
    streams = {head: HeadStream(samples[head], HEADS.index(head), config.train.seed) for head in config.heads}

    model = build_model(config).to(device)
    patch_size = model.config.patch_size
    losses = {
        head: ClusterDiscriminationLoss(
            settings.num_classes,
            model.config.hidden_size,
            margin=config.loss.margin,
            scale=config.loss.scale,
            sample_rate=config.loss.sample_rate,
            num_labels=config.loss.num_labels,
            filter_threshold=config.loss.filter_threshold,
        ).to(device)
        for head, settings in config.heads.items()
    }
    network: torch.nn.Module = model
    sharded = config.train.fsdp and world > 1
    if sharded:
        shard_model(model, model.encoder.layers)
    elif world > 1:
        network = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        network.register_comm_hook(None, _sum_gradients)
    optimizer = torch.optim.AdamW(parameter_groups(model, losses, config), betas=config.optim.betas)
    min_ratio = config.optim.min_lr / config.optim.lr if config.optim.lr else 0.0
    base_lrs = [group["lr"] for group in optimizer.param_groups]

    step = 0
    checkpoint = latest_checkpoint(out) if resume else None
    if checkpoint is not None:
        state = load_checkpoint(checkpoint, model, optimizer, losses)
        step = state["step"]
        max_steps = max_steps or state["max_steps"]  # the same run goes on with the same schedule
        for head, position in state["data"].items():
            streams[head].load_state_dict(position)
    max_steps = max_steps or config.train.max_steps
    loader = BatchLoader(streams, config, patch_size, rank, world)

    writer = _tensorboard(out) if config.train.tensorboard and rank == 0 else None
    progress = tqdm(total=max_steps, initial=step, desc="train", disable=rank != 0 or None)
    metrics: dict[str, Any] = {}
    end = max_steps if stop_after is None else min(max_steps, step + stop_after)
    window = {"samples": 0, "tokens": 0, "start": time.perf_counter()}
    while step < end:
        factor = learning_rate_factor(step, max_steps, config.optim.warmup_steps, config.optim.power, min_ratio)
        for group, base in zip(optimizer.param_groups, base_lrs, strict=True):
            group["lr"] = base * factor
        head_losses = {head: 0.0 for head in config.heads}
        for micro in range(config.optim.accumulation):
            last = micro == config.optim.accumulation - 1
            if sharded:
                model.set_requires_gradient_sync(last)
            context = network.no_sync() if world > 1 and not sharded and not last else nullcontext()
            with context:
                total = torch.zeros((), device=device)
                for index, head in enumerate(config.heads):
                    count, batch = loader.next(head)
                    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.train.bf16):
                        pooled = torch.cat([network(**_to(inputs, device)).pooler_output for inputs in batch.forwards])
                    losses[head].reseed(sample_seed(config.train.seed, step, micro, index))
                    value = losses[head](pooled.float(), batch.labels.to(device))
                    total = total + value / config.optim.accumulation
                    head_losses[head] += value.item() / config.optim.accumulation
                    window["samples"] += count * world
                    window["tokens"] += batch.tokens(patch_size) * world
                total.backward()
        centre_params = [loss.weight for loss in losses.values()]
        norm = global_grad_norm(list(model.parameters()), centre_params)
        if config.optim.grad_clip is not None and norm > config.optim.grad_clip:
            scale = float(config.optim.grad_clip / (norm + 1e-6))
            for parameter in [*model.parameters(), *centre_params]:
                if parameter.grad is not None:
                    parameter.grad.mul_(scale)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        progress.update()
        elapsed = time.perf_counter() - window["start"]
        metrics = {
            "step": step,
            "loss": sum(head_losses.values()),
            **{f"loss/{head}": value for head, value in head_losses.items()},
            "lr": optimizer.param_groups[0]["lr"],
            "grad_norm": float(norm),
            "samples_per_s": window["samples"] / elapsed if elapsed > 0 else 0.0,
            "tokens_per_s": window["tokens"] / elapsed if elapsed > 0 else 0.0,
            "memory_mib": _memory_mib(device),
        }
        if rank == 0 and (step % config.train.log_every == 0 or step == end):
            progress.write(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items()))
            if not (out / "metrics.jsonl").exists():
                RunFiles(out).record_log(out / "metrics.jsonl")  # listed before it exists: never an unlisted log
            with open(out / "metrics.jsonl", "a") as log:
                log.write(json.dumps(metrics) + "\n")
            if writer is not None:
                for key, value in metrics.items():
                    writer.add_scalar(key, value, step)
            window = {"samples": 0, "tokens": 0, "start": time.perf_counter()}
        if step % config.train.checkpoint_every == 0 or step == end:
            trainer_state = {
                "data": loader.state_dict(),
                "max_steps": max_steps,
                "world_size": world,
                "parallel": "fsdp" if sharded else "ddp" if world > 1 else "none",
                "backbone_values_per_process": sum(_local(p).numel() for p in model.parameters()),
                "config": config.as_dict(),
            }
            save_checkpoint(out, step, model, optimizer, losses, trainer_state, config.train.keep_checkpoints)
    progress.close()
    loader.close()
    if step >= max_steps and (rank == 0 or sharded):
        export(model, config, out / "final", whole_state(model) if sharded else None)
    if writer is not None:
        writer.close()
    if dist.is_initialized():
        dist.barrier()
    return metrics


def export(
    model: OneVisionEncoderModel, config: TrainConfig, folder: Path, state: dict[str, torch.Tensor] | None = None
) -> None:
    """Weights, config and processor, loadable by ``from_pretrained`` / ``AutoModel``, into ``folder`` (the
    run's ``final/``, listed in its :class:`~.checkpoint.RunFiles`). A sharded model passes its gathered
    ``state`` (every process calls this then; only rank 0 writes). An earlier export there is replaced,
    but not a folder holding a file the run did not write (``FileExistsError``: the last checkpoint is
    saved, so ``--resume`` exports again once it is moved out)."""
    if state is not None:
        if rank_world()[0] != 0:
            return
        model = OneVisionEncoderModel(model.config)
        load_whole_state(model, state)
    run_files = RunFiles(folder.parent)
    foreign = run_files.foreign(folder)
    if foreign:
        raise FileExistsError(
            f"{folder.parent} holds {', '.join(foreign)}, which training did not write: the model is not exported "
            "over it; move it out and --resume to export"
        )
    with atomic_directory(folder) as temporary:
        model.save_pretrained(temporary)
        resolution = config.heads.get("image", next(iter(config.heads.values()))).resolution
        processor = OneVisionEncoderImageProcessor(
            size={"shortest_edge": resolution},
            crop_size={"height": resolution, "width": resolution},
            patch_size=model.config.patch_size,
        )
        processor.save_pretrained(temporary)
        (temporary / "training_config.yaml").write_text(yaml.safe_dump(config.as_dict(), sort_keys=False))
        run_files.record_folder(folder, source=temporary)  # listed first: a kill in between leaves nothing unlisted


def _local(parameter: torch.Tensor) -> torch.Tensor:
    """What this process holds of a parameter (its slice when sharded)."""
    return parameter.to_local() if is_sharded(parameter) else parameter


def _to(inputs: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {key: value.to(device, non_blocking=True) for key, value in inputs.items()}


def _memory_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def _tensorboard(out: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as error:
        raise ImportError("train.tensorboard: true needs the tensorboard package: pip install tensorboard") from error
    folder = out / "tensorboard"
    before = set(folder.iterdir()) if folder.is_dir() else set()
    writer = SummaryWriter(str(folder))  # creates its events file at once
    run_files = RunFiles(out)
    for events in sorted(set(folder.iterdir()) - before):
        run_files.record_log(events)
    return writer
