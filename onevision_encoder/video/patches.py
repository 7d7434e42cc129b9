"""Patchify, gather and re-tile ("mosaic") clips.

A codec selection keeps K patches of a ``T``-frame clip. The model takes them either as the whole
clip plus their indices (gather path) or as a *mosaic*: the K patches, in index order, re-tiled
into ``K / (Hp * Wp)`` frames of the clip's size, plus the same indices, which then only give
positions. Both give identical features; the mosaic holds K patches instead of T frames.

Clips are ``[B, C, T, H, W]`` tensors; indices are ``[K]`` (shared) or ``[B, K]``.
"""

from __future__ import annotations

import torch

from .grid import check_visible_indices


def _check_clip(clip: torch.Tensor, patch_size: int) -> tuple[int, int]:
    if clip.ndim != 5:
        raise ValueError(f"clip must be [B, C, T, H, W], got shape {tuple(clip.shape)}")
    height, width = clip.shape[-2:]
    if height % patch_size or width % patch_size:
        raise ValueError(f"clip size {height}x{width} is not a multiple of the patch size {patch_size}")
    return height // patch_size, width // patch_size


def patchify(clip: torch.Tensor, patch_size: int) -> torch.Tensor:
    """``[B, C, T, H, W]`` -> ``[B, T*Hp*Wp, C, p, p]`` in flat-index order (frame, row, column)."""
    hp, wp = _check_clip(clip, patch_size)
    b, c, t = clip.shape[:3]
    p = patch_size
    patches = clip.reshape(b, c, t, hp, p, wp, p).permute(0, 2, 3, 5, 1, 4, 6)
    return patches.reshape(b, t * hp * wp, c, p, p)


def unpatchify(patches: torch.Tensor, grid_hw: tuple[int, int]) -> torch.Tensor:
    """Inverse of :func:`patchify`: ``[B, T*Hp*Wp, C, p, p]`` -> ``[B, C, T, H, W]``."""
    if patches.ndim != 5 or patches.shape[-1] != patches.shape[-2]:
        raise ValueError(f"patches must be [B, N, C, p, p], got shape {tuple(patches.shape)}")
    b, n, c, p, _ = patches.shape
    hp, wp = grid_hw
    if n % (hp * wp):
        raise ValueError(f"{n} patches do not fill whole frames of {hp}x{wp} patches")
    t = n // (hp * wp)
    frames = patches.reshape(b, t, hp, wp, c, p, p).permute(0, 4, 1, 2, 5, 3, 6)
    return frames.reshape(b, c, t, hp * p, wp * p)


def gather_patches(clip: torch.Tensor, indices: torch.Tensor, patch_size: int) -> torch.Tensor:
    """The patches of ``clip`` named by flat ``indices``: ``[B, K, C, p, p]`` in the order given."""
    patches = patchify(clip, patch_size)
    indices = check_visible_indices(indices, patches.shape[0], patches.shape[1], name="indices")
    index = indices.to(patches.device)[:, :, None, None, None].expand(-1, -1, *patches.shape[2:])
    return patches.gather(1, index)


def mosaic(clip: torch.Tensor, indices: torch.Tensor, patch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Re-tile the K patches named by ``indices`` into ``[B, C, K/(Hp*Wp), H, W]``.

    Patches are laid out in ascending index order. Returns the mosaic and those sorted indices,
    which are the ``visible_indices`` to pass with it.
    """
    hp, wp = _check_clip(clip, patch_size)
    per_frame = hp * wp
    indices = check_visible_indices(indices, clip.shape[0], clip.shape[2] * per_frame, name="indices")
    if indices.shape[1] % per_frame:
        raise ValueError(
            f"a mosaic needs a multiple of {per_frame} patches ({hp}x{wp} per frame), got {indices.shape[1]}"
        )
    indices = indices.sort(dim=1).values
    return unpatchify(gather_patches(clip, indices, patch_size), (hp, wp)), indices


def unmosaic(
    tiles: torch.Tensor, indices: torch.Tensor, num_frames: int, patch_size: int, fill: float = 0.0
) -> torch.Tensor:
    """Put the patches of a mosaic back at their places in a ``num_frames`` clip.

    ``tiles`` is ``[B, C, K/(Hp*Wp), H, W]`` laid out in the order of ``indices`` (as :func:`mosaic`
    makes it). Patches not selected are set to ``fill``. Returns ``[B, C, num_frames, H, W]``.
    """
    hp, wp = _check_clip(tiles, patch_size)
    patches = patchify(tiles, patch_size)
    b, k = patches.shape[:2]
    total = num_frames * hp * wp
    indices = check_visible_indices(indices, b, total, name="indices")
    if indices.shape[1] != k:
        raise ValueError(f"indices name {indices.shape[1]} patches but the mosaic holds {k}")
    clip_patches = patches.new_full((b, total, *patches.shape[2:]), fill)
    index = indices.to(patches.device)[:, :, None, None, None].expand(-1, -1, *patches.shape[2:])
    clip_patches.scatter_(1, index, patches)
    return unpatchify(clip_patches, (hp, wp))
