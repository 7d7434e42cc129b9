"""The 64-frame virtual grid: frame positions, chunk indices and flat index <-> (t, h, w).

A clip of ``T`` frames, each cut into ``Hp x Wp`` patches, is numbered frame-major:
patch ``(t, h, w)`` has flat index ``t * Hp * Wp + h * Wp + w``. Clips are placed on a
virtual grid of ``rope_temporal_size`` (64) frames, so a chunk of 8 frames spread over a
video sits on virtual frames ``linspace(0, 63, 8)``, not on 0..7.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

VIRTUAL_FRAMES = 64


def frame_positions(num_frames: int, temporal_size: int = VIRTUAL_FRAMES, rounding: str = "floor") -> torch.Tensor:
    """Virtual-grid frame of each of ``num_frames`` uniformly sampled frames, int64 ``[num_frames]``.

    ``rounding="floor"``: ``floor(linspace(0, temporal_size - 1, num_frames))`` as in the model card.
    ``rounding="round"``: ``round(i / (num_frames - 1) * (temporal_size - 1))``, the release's attentive
    probe (the two differ for 16 frames: 12 vs 13, 16 vs 17, ...).
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if temporal_size < 1:
        raise ValueError(f"temporal_size must be >= 1, got {temporal_size}")
    spread = torch.linspace(0, temporal_size - 1, num_frames, dtype=torch.float64)
    if rounding == "floor":
        return spread.floor().long()
    if rounding == "round":
        return spread.round().long()
    raise ValueError(f"rounding must be 'floor' or 'round', got {rounding!r}")


def chunk_visible_indices(positions: torch.Tensor | Sequence[int], grid_hw: tuple[int, int]) -> torch.Tensor:
    """Flat grid indices of every patch of frames placed at virtual ``positions``.

    Returns int64 ``[len(positions) * Hp * Wp]``, frame by frame in the order given; pass it as
    ``visible_indices`` together with the ``[B, C, T, H, W]`` clip of those frames.
    """
    positions = torch.as_tensor(positions, dtype=torch.long)
    if positions.ndim != 1:
        raise ValueError(f"positions must be 1-D, got shape {tuple(positions.shape)}")
    if (positions < 0).any():
        raise ValueError(f"positions must be non-negative, got {positions.tolist()}")
    per_frame = grid_hw[0] * grid_hw[1]
    return (positions[:, None] * per_frame + torch.arange(per_frame)).reshape(-1)


def indices_to_positions(indices: torch.Tensor | np.ndarray, grid_hw: tuple[int, int]) -> torch.Tensor | np.ndarray:
    """Flat indices ``[...]`` to ``(t, h, w)`` positions ``[..., 3]`` (same array type and integer dtype)."""
    hp, wp = grid_hw
    stack = torch.stack if isinstance(indices, torch.Tensor) else np.stack
    return stack((indices // (hp * wp), (indices // wp) % hp, indices % wp), -1)


def positions_to_indices(positions: torch.Tensor, grid_hw: tuple[int, int]) -> torch.Tensor:
    """``(t, h, w)`` positions ``[..., 3]`` to flat indices ``[...]``; h and w must lie inside the grid."""
    hp, wp = grid_hw
    if positions.shape[-1] != 3:
        raise ValueError(f"positions must have a last dimension of 3 (t, h, w), got shape {tuple(positions.shape)}")
    t, h, w = positions.unbind(-1)
    if (t < 0).any() or (h < 0).any() or (w < 0).any() or (h >= hp).any() or (w >= wp).any():
        raise ValueError(f"positions fall outside a grid of {hp}x{wp} patches per frame")
    return t * (hp * wp) + h * wp + w


def check_visible_indices(
    indices: torch.Tensor | np.ndarray | Sequence[int],
    batch_size: int,
    limit: int,
    name: str = "visible_indices",
) -> torch.Tensor:
    """Validate patch indices and return them as int64 ``[batch_size, N]``.

    Accepts ``[N]`` (shared by every sample) or ``[batch_size, N]``. Raises ``ValueError`` naming the
    problem for non-integer values, a wrong rank or batch size, negative or ``>= limit`` values,
    and an index repeated within a sample.
    """
    if not isinstance(indices, torch.Tensor):
        indices = torch.as_tensor(np.asarray(indices))
    if indices.dtype == torch.bool or indices.is_floating_point() or indices.is_complex():
        raise ValueError(f"{name} must hold integers, got dtype {indices.dtype}")
    if indices.ndim == 1:
        indices = indices.unsqueeze(0).expand(batch_size, -1)
    if indices.ndim != 2:
        raise ValueError(f"{name} must have shape [N] or [B, N], got {tuple(indices.shape)}")
    if indices.shape[0] != batch_size:
        raise ValueError(f"{name} has batch size {indices.shape[0]} but pixel_values has {batch_size}")
    if indices.shape[1] == 0:
        raise ValueError(f"{name} is empty: at least one patch must be visible")
    indices = indices.long()
    if torch.compiler.is_compiling():
        # The values are unknown while torch.compile traces: the same checks become assertions run in the graph.
        ordered = indices.sort(dim=1).values
        torch._assert_async(
            (ordered[:, 0] >= 0).all() & (ordered[:, -1] < limit).all(),
            f"{name} contains an index that is negative or not below the number of patches",
        )
        torch._assert_async((ordered.diff(dim=1) != 0).all(), f"{name} repeats an index within a sample")
        return indices
    low, high = int(indices.min()), int(indices.max())
    if low < 0:
        raise ValueError(f"{name} contains a negative index ({low})")
    if high >= limit:
        raise ValueError(f"{name} contains index {high}, out of range for {limit} patches")
    ordered = indices.sort(dim=1).values
    repeated = ordered[:, 1:] == ordered[:, :-1]
    if repeated.any():
        sample, column = (int(v) for v in repeated.nonzero()[0])
        raise ValueError(f"{name} repeats index {int(ordered[sample, column])} in sample {sample}")
    return indices
