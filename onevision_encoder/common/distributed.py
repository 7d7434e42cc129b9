"""Process-group helpers shared by training and evaluation (torchrun sets the environment)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.distributed as dist


def resolve_device(device: str) -> str:
    """``auto``: the process's GPU (``LOCAL_RANK`` under torchrun) when there is one, else the CPU; any
    other name is passed through. The one reading of ``--device auto`` (training, encode, probe, concepts)."""
    if device != "auto":
        return device
    return f"cuda:{os.environ.get('LOCAL_RANK', '0')}" if torch.cuda.is_available() else "cpu"


def setup_distributed() -> tuple[int, int, torch.device]:
    """Join the torchrun group if there is one (NCCL on GPU, gloo on CPU); returns (rank, world, device)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = torch.device(resolve_device("auto"))
    if world > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    rank = dist.get_rank() if dist.is_initialized() else 0
    return rank, world, device


@contextmanager
def process_group() -> Iterator[tuple[int, int, torch.device]]:
    """:func:`setup_distributed` for the length of a run, leaving the group it joined at the end.

    A process that exits with a live gloo group can abort in its C++ destructors ("terminate called
    without an active exception") and fail the whole torchrun job after the work is done.
    """
    joined = not dist.is_initialized()
    rank, world, device = setup_distributed()
    try:
        yield rank, world, device
    finally:
        if joined and dist.is_initialized():
            dist.destroy_process_group()


def rank_world() -> tuple[int, int]:
    """(rank, world size) of the current group, (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def agree(value: Any) -> Any:
    """Rank 0's ``value`` on every process (decisions that all processes must take alike)."""
    _, world = rank_world()
    if world == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_in_order(mine: dict[int, Any]) -> list[Any]:
    """Each process's values keyed by global index -> every value in index order, on every process."""
    pieces = [mine]
    _, world = rank_world()
    if world > 1:
        pieces = [None] * world
        dist.all_gather_object(pieces, mine)
    merged = {index: value for piece in pieces for index, value in piece.items()}
    return [merged[index] for index in sorted(merged)]
