"""Fully sharded data parallel (FSDP2) for the backbone, and its state as whole tensors.

With ``train.fsdp`` each encoder block (and the rest of the model) keeps only its slice of the
parameters, gradients and AdamW moments on each process, gathering a block's weights just for its
forward and backward: the memory per process falls with the number of processes, for a huge
encoder on small GPUs. Checkpoints and the exported model hold whole tensors, as with DDP, so a run
can go on with or without FSDP, on any number of processes.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

try:  # torch >= 2.6; the same API lived in a private module before
    from torch.distributed.fsdp import FSDPModule, fully_shard
except ImportError:  # pragma: no cover - depends on the installed torch
    try:
        from torch.distributed._composable.fsdp import FSDPModule, fully_shard
    except ImportError:
        FSDPModule = fully_shard = None

try:
    from torch.distributed.tensor import DTensor, distribute_tensor
except ImportError:  # pragma: no cover - torch < 2.5
    from torch.distributed._tensor import DTensor, distribute_tensor


def shard_model(model: nn.Module, blocks: nn.ModuleList) -> None:
    """Shard every block of ``blocks`` and then the rest of ``model`` across the default group.

    Gradients are summed across processes, not averaged, as the DDP path does (the loss is global).
    """
    if fully_shard is None:
        raise RuntimeError(f"train.fsdp needs FSDP2's fully_shard (torch >= 2.6); this is torch {torch.__version__}")
    for block in blocks:
        fully_shard(block)
    fully_shard(model)
    for module in model.modules():
        if isinstance(module, FSDPModule):
            divide = getattr(module, "set_gradient_divide_factor", None) or module.set_reduce_scatter_divide_factor
            divide(1.0)
            force_sum = getattr(module, "set_force_sum_reduction_for_comms", None)
            if force_sum is not None:  # a plain SUM: gloo has no pre-multiplied sum
                force_sum(True)


def is_sharded(tensor: torch.Tensor | None) -> bool:
    return isinstance(tensor, DTensor)


def rank_rows(tensor: torch.Tensor, rank: int, world: int) -> torch.Tensor:
    """The slice of a whole tensor that FSDP2's ``Shard(0)`` gives ``rank``: ``torch.chunk`` along
    dim 0, empty for the ranks beyond the chunks (a scalar belongs to rank 0)."""
    if tensor.ndim == 0:
        return tensor.reshape(1) if rank == 0 else tensor.new_empty(0)
    chunks = torch.chunk(tensor, world, dim=0)
    return chunks[rank] if rank < len(chunks) else tensor.new_empty(0)


def whole(tensor: torch.Tensor) -> torch.Tensor:
    """The whole tensor on the CPU; for a sharded one every process must call this, in the same order."""
    if is_sharded(tensor):
        tensor = tensor.full_tensor()
    return tensor.detach().cpu().contiguous()


def whole_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """``model.state_dict()`` as whole CPU tensors (collective when the model is sharded)."""
    return {name: whole(value) for name, value in model.state_dict().items()}


def load_whole_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy whole tensors into the model, each process keeping its own slice where it is sharded."""
    current = model.state_dict()
    missing, unexpected = sorted(set(current) - set(state)), sorted(set(state) - set(current))
    if missing or unexpected:
        raise ValueError(f"checkpoint does not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]}")
    with torch.no_grad():
        for name, target in current.items():
            source = state[name].to(target.dtype)
            if is_sharded(target):
                target.to_local().copy_(_distribute_like(source, target).to_local())
            else:
                target.copy_(source)


def whole_optimizer_state(optimizer: torch.optim.Optimizer, leave_out: list[torch.Tensor]) -> dict[str, Any]:
    """The optimiser's ``state_dict`` with whole tensors, without the state of the ``leave_out`` parameters."""
    left_out = {id(param) for param in leave_out}
    skip = {index for index, param in enumerate(_parameters(optimizer)) if id(param) in left_out}
    state = optimizer.state_dict()
    state["state"] = {
        index: {key: whole(value) if torch.is_tensor(value) else value for key, value in entry.items()}
        for index, entry in sorted(state["state"].items())
        if index not in skip
    }
    return state


def shard_optimizer_state(optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> dict[str, Any]:
    """A whole-tensor optimiser state made to fit the optimiser's (possibly sharded) parameters."""
    params = _parameters(optimizer)
    fitted = {}
    for index, entry in state["state"].items():
        param = params[int(index)]
        sharded = is_sharded(param)
        fitted[index] = {
            key: _distribute_like(value, param) if sharded and torch.is_tensor(value) and value.ndim else value
            for key, value in entry.items()
        }
    return {**state, "state": fitted}


def _parameters(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    """The parameters in the order ``state_dict`` numbers them."""
    return [param for group in optimizer.param_groups for param in group["params"]]


def _distribute_like(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """A whole tensor laid out as the sharded ``target`` (each process keeps its slice)."""
    return distribute_tensor(source.to(target.device), target.device_mesh, target.placements)
