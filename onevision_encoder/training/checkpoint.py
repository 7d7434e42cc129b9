"""Checkpoints that resume the same run, on the same or another number of processes.

A checkpoint folder ``step-NNNNNNNN/`` holds ``model.safetensors`` (the backbone), ``optimizer.pt``
(the backbone's AdamW state), ``trainer.json`` (step, scheduler, data positions, config), ``rng.pt``
(every rank's RNG states) and, for each head, every rank's slice of the class centres and of their
AdamW state, ``centres-HEAD.rankR.safetensors``, with the rows it covers in its metadata. Loading
reads whichever slices cover a rank's new range, so centres re-shard to any world size. The folder
is filled in a temporary place and renamed when every rank has written its part.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from ..distributed import rank_world
from ..files import remove_leftovers
from ..model.loading import DamagedCheckpointError
from .sharding import is_sharded, load_whole_state, shard_optimizer_state, whole_optimizer_state, whole_state

CHECKPOINTS = "checkpoints"


def _barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def _gather(value: Any) -> list[Any]:
    if dist.is_available() and dist.is_initialized():
        gathered: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, value)
        return gathered
    return [value]


def rng_state() -> dict[str, Any]:
    return {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def centre_tensors(loss: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """This rank's centres and their AdamW moments."""
    weight = loss.weight
    tensors = {"weight": weight.detach().cpu().contiguous()}
    state = optimizer.state.get(weight, {})
    for key in ("exp_avg", "exp_avg_sq"):
        if key in state:
            tensors[key] = state[key].detach().cpu().contiguous()
    return tensors


def save_checkpoint(
    out: Path,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    losses: dict[str, torch.nn.Module],
    trainer_state: dict[str, Any],
    keep: int,
) -> Path:
    """Every rank calls this; returns the folder written."""
    root = out / CHECKPOINTS
    final = root / f"step-{step:08d}"
    temporary = root / f".step-{step:08d}.tmp"
    if rank_world()[0] == 0:
        shutil.rmtree(temporary, ignore_errors=True)
        temporary.mkdir(parents=True)
    _barrier()
    rank = rank_world()[0]
    for head, loss in losses.items():
        start, end = loss.local_range
        steps = float(optimizer.state.get(loss.weight, {}).get("step", 0))
        metadata = {"start": str(start), "end": str(end), "step": str(steps)}
        save_file(centre_tensors(loss, optimizer), temporary / f"centres-{head}.rank{rank}.safetensors", metadata)
    rngs = _gather(rng_state())
    if rank == 0 or any(is_sharded(p) for p in model.parameters()):  # gathering a sharded model takes everyone
        backbone = whole_state(model)
        # the centres' state is saved re-shardably beside it
        backbone_optimizer = whole_optimizer_state(optimizer, leave_out=[loss.weight for loss in losses.values()])
    if rank == 0:
        save_file(backbone, temporary / "model.safetensors")
        torch.save(backbone_optimizer, temporary / "optimizer.pt")
        torch.save(rngs, temporary / "rng.pt")
        (temporary / "trainer.json").write_text(json.dumps({**trainer_state, "step": step}, indent=1))
    _barrier()
    if rank == 0:
        if final.exists():
            shutil.rmtree(final)
        os.replace(temporary, final)
        for old in sorted(root.glob("step-*"))[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    _barrier()
    return final


def latest_checkpoint(out: Path) -> Path | None:
    folders = sorted((out / CHECKPOINTS).glob("step-*"))
    return folders[-1] if folders else None


def load_checkpoint(
    folder: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    losses: dict[str, torch.nn.Module],
) -> dict[str, Any]:
    """Restore everything; returns the trainer state saved with it. A file that cannot be read raises
    :class:`DamagedCheckpointError` naming it."""
    load_whole_state(model, _read(folder / "model.safetensors", load_file))
    saved = shard_optimizer_state(optimizer, _read(folder / "optimizer.pt", _torch_load))
    current = optimizer.state_dict()
    current["param_groups"] = saved["param_groups"]
    current["state"] = saved["state"]
    optimizer.load_state_dict(current)
    for head, loss in losses.items():
        _load_centres(folder, head, loss, optimizer)
    trainer_state = _read(folder / "trainer.json", lambda path: json.loads(path.read_text()))
    rngs = _read(folder / "rng.pt", _torch_load)
    # On another number of processes there is no saved state per rank to restore. The run is unchanged all
    # the same: the loop's random draws come from generators seeded per sample and per step, not these
    # (attention dropout, 0 in the release, is the one user of the global generator).
    if len(rngs) == (dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1):
        set_rng_state(rngs[rank_world()[0]])
    return trainer_state


def _read(path: Path, read: Callable[[Path], Any]) -> Any:
    """``read(path)``, with a file that cannot be read (empty, truncated, garbled) reported by name."""
    try:
        return read(path)
    except (SafetensorError, EOFError, pickle.UnpicklingError, RuntimeError, ValueError, UnicodeDecodeError) as error:
        raise DamagedCheckpointError(
            path,
            f"damaged or truncated checkpoint file ({type(error).__name__}: {error}); delete the folder "
            f"{path.parent} to resume from the checkpoint before it (if any)",
        ) from error


def _torch_load(path: Path) -> Any:
    return torch.load(path, weights_only=False)


def _load_centres(folder: Path, head: str, loss: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
    start, end = loss.local_range
    pieces: dict[str, list[torch.Tensor]] = {}
    covered = start
    step = 0
    for path in sorted(
        folder.glob(f"centres-{head}.rank*.safetensors"), key=lambda p: int(p.stem.rsplit("rank", 1)[1])
    ):
        with _read(path, lambda path: safe_open(path, framework="pt")) as shard:
            meta = shard.metadata()
            lo, hi = int(meta["start"]), int(meta["end"])
            step = int(float(meta["step"]))
            take_lo, take_hi = max(lo, start), min(hi, end)
            if take_lo >= take_hi:
                continue
            for key in shard.keys():  # noqa: SIM118 - safe_open is not iterable
                pieces.setdefault(key, []).append(shard.get_slice(key)[take_lo - lo : take_hi - lo])
            covered = max(covered, take_hi)
    if covered < end or "weight" not in pieces:
        raise ValueError(f"{folder}: the saved centres of head {head!r} do not cover rows {start}..{end}")
    with torch.no_grad():
        loss.weight.copy_(torch.cat(pieces["weight"]))
    if "exp_avg" in pieces:
        device = loss.weight.device
        optimizer.state[loss.weight] = {
            "step": torch.tensor(float(step)),
            "exp_avg": torch.cat(pieces["exp_avg"]).to(device),
            "exp_avg_sq": torch.cat(pieces["exp_avg_sq"]).to(device),
        }


def clean_partial(out: Path) -> None:
    if rank_world()[0] == 0:
        for leftover in (out / CHECKPOINTS).glob(".step-*.tmp"):
            shutil.rmtree(leftover, ignore_errors=True)
        remove_leftovers(out)
    _barrier()
