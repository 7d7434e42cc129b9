"""The process-group helpers shared by training and evaluation."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import torch
import torch.distributed as dist
from conftest import spawn_processes

from onevision_encoder.common.distributed import gather_in_order, process_group


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _torchrun_worker(rank: int, world: int, port: int, folder: str) -> None:
    """What a torchrun child sees: the group comes from the environment."""
    os.environ.update(
        RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    with process_group() as (joined_rank, joined_world, device):
        inside = dist.is_initialized()
        # rank r holds the indices r, r + world, ...: the strided split used for extraction and scoring
        gathered = gather_in_order({index: f"clip{index}" for index in range(rank, 5, world)})
    result = {"rank": joined_rank, "world": joined_world, "device": str(device), "inside": inside}
    result |= {"gathered": gathered, "left": not dist.is_initialized()}
    torch.save(result, Path(folder) / f"rank{rank}.pt")


def test_process_group_joins_from_the_environment_and_leaves_at_the_end(tmp_path: Path) -> None:
    spawn_processes(_torchrun_worker, (2, _free_port(), str(tmp_path)))
    results = [torch.load(tmp_path / f"rank{rank}.pt") for rank in range(2)]
    for rank, result in enumerate(results):
        assert (result["rank"], result["world"], result["inside"]) == (rank, 2, True)
        assert result["gathered"] == [f"clip{index}" for index in range(5)]
        # a live gloo group at interpreter exit can abort the process after its work is done
        assert result["left"]


def test_one_process_needs_no_group(monkeypatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with process_group() as (rank, world, _):
        assert (rank, world) == (0, 1) and not dist.is_initialized()
        assert gather_in_order({2: "b", 0: "a"}) == ["a", "b"]
