"""``CodecSelection``: the chosen patches, their scores, and the files the release's tools read."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..common.files import atomic_directory
from ..video.grid import check_visible_indices, indices_to_positions
from ..video.normalisation import CLIP_MEAN, CLIP_STD, normalise
from ..video.patches import mosaic
from .selection_folder import (
    ENCODER_INDICES_FILE,
    FRAME_IDS_FILE,
    LMM_POSITIONS_FILE,
    META_FILE,
    PACK_POSITIONS_FILE,
    RECORD,
    SCORES_FILE,
    check_ours,
    new_record,
)

__all__ = [
    "ENCODER_INDICES_FILE",
    "FRAME_IDS_FILE",
    "LMM_POSITIONS_FILE",
    "META_FILE",
    "PACK_POSITIONS_FILE",
    "SCORES_FILE",
    "CodecSelection",
    "pack_mosaic_names",
]


def pack_mosaic_names(folder: Path) -> list[str]:
    """The mosaic files of a packed selection's ``folder``, in order (``mosaic_0``, ``mosaic_1``, ...)."""
    return sorted((p.name for p in folder.glob("mosaic_*")), key=lambda name: int(name.split("_")[1].split(".")[0]))


def selection_agreement(positions_thw: np.ndarray, reference_thw: np.ndarray, first_frame: int = 1) -> float:
    """Jaccard index of two selections' ``(t, h, w)`` sets over frames ``t >= first_frame``: how far a selection
    reproduces another (the release's published ones; the ``lmm`` preset keeps frame 0 whole in both)."""

    def kept(positions: np.ndarray) -> set[tuple[int, ...]]:
        positions = np.asarray(positions).reshape(-1, 3)
        return set(map(tuple, positions[positions[:, 0] >= first_frame].tolist()))

    ours, theirs = kept(positions_thw), kept(reference_thw)
    union = ours | theirs
    return len(ours & theirs) / len(union) if union else 1.0


@dataclass
class CodecSelection:
    """K patches of a ``T x Hp x Wp`` grid chosen from a video.

    ``visible_indices`` are flat indices ``t*Hp*Wp + h*Wp + w`` (ascending, int64);
    ``positions_thw`` the same patches as (t, h, w); ``score_order`` the same indices best first
    (whole anchor frames first). ``frames`` holds the T sampled frames at the model's geometry
    (uint8 ``[T, H, W, 3]``) when they were kept; they are not saved.
    """

    visible_indices: np.ndarray
    score_order: np.ndarray
    frame_ids: np.ndarray
    grid: tuple[int, int, int]
    scores: np.ndarray | None
    motion_source: str
    meta: dict[str, Any] = field(default_factory=dict)
    frames: np.ndarray | None = None

    @property
    def positions_thw(self) -> np.ndarray:
        return indices_to_positions(self.visible_indices, self.grid[1:]).astype(np.int32)

    @property
    def num_patches(self) -> int:
        return int(self.visible_indices.size)

    @property
    def patch_size(self) -> int:
        return int(self.meta["patch_size"])

    def patches_per_frame(self) -> np.ndarray:
        """How many patches each sampled frame contributes, int64 ``[T]``."""
        return np.bincount(self.visible_indices // (self.grid[1] * self.grid[2]), minlength=self.grid[0])

    # --- model inputs ----------------------------------------------------------------------------

    def pixel_values(self, mean: tuple[float, ...] = CLIP_MEAN, std: tuple[float, ...] = CLIP_STD) -> torch.Tensor:
        """The T sampled frames (the SAME ``frame_ids`` that were scored), normalised: ``[1, 3, T, H, W]``."""
        if self.frames is None:
            raise ValueError(
                "this selection holds no frames: call select_patches(..., keep_frames=True) (frames are not saved)"
            )
        return normalise(self.frames, mean, std).unsqueeze(0)

    def model_inputs(self, path: str = "gather") -> dict[str, torch.Tensor]:
        """Keyword arguments for ``OneVisionEncoderModel``.

        ``gather``: the whole clip ``[1, 3, T, H, W]`` plus the K indices (the model gathers).
        ``mosaic``: the K patches re-tiled into ``[1, 3, K/(Hp*Wp), H, W]`` plus the same indices.
        Both give the same features.
        """
        clip = self.pixel_values()
        indices = torch.from_numpy(self.visible_indices).long().unsqueeze(0)
        if path == "gather":
            return {"pixel_values": clip, "visible_indices": indices}
        if path == "mosaic":
            tiles, ordered = mosaic(clip, indices, self.patch_size)
            return {"pixel_values": tiles, "visible_indices": ordered}
        raise ValueError(f"path must be 'gather' or 'mosaic', got {path!r}")

    def mosaic_frames(self) -> np.ndarray:
        """The K patches of the kept frames re-tiled, in ascending index order, as uint8 pictures
        ``[K/(Hp*Wp), H, W, 3]`` (the mosaics of ``preprocess --pack``); ``positions_thw`` places their patches."""
        if self.frames is None:
            raise ValueError(
                "this selection holds no frames: call select_patches(..., keep_frames=True) (frames are not saved)"
            )
        per_frame = self.grid[1] * self.grid[2]
        if self.num_patches % per_frame:
            raise ValueError(f"mosaics need K to be a multiple of {per_frame} patches, got {self.num_patches}")
        clip = torch.from_numpy(self.frames).permute(3, 0, 1, 2).unsqueeze(0)
        tiles, _ = mosaic(clip, torch.from_numpy(self.visible_indices), self.patch_size)
        return tiles[0].permute(1, 2, 3, 0).numpy()

    # --- files -----------------------------------------------------------------------------------

    def save(self, folder: str | os.PathLike[str], made_from: dict[str, Any] | None = None) -> Path:
        """Write the selection's files into ``folder`` atomically (the folder appears complete or not at all).
        A folder already there is replaced only if it holds nothing but what a selection wrote
        (:class:`~onevision_encoder.codec.selection_folder.FolderNotOursError` otherwise)."""
        with atomic_directory(folder, check_replaceable=check_ours) as temporary:
            self.write_files(temporary, made_from)
        return Path(folder)

    def write_files(self, folder: str | os.PathLike[str], made_from: dict[str, Any] | None = None) -> None:
        """The release's files (``lmm``: ``visidx_thw.npy`` in score order; otherwise ``visidx.npy``
        ascending), plus ``frame_ids.npy``, ``scores.npy`` and, last, ``meta.json``, into an existing folder.
        ``meta.json`` records under ``made_by`` every file of the folder, the package version and
        ``made_from`` (a command's record of the input and options:
        :func:`~onevision_encoder.codec.selection_folder.made_from`)."""
        folder = Path(folder)
        if self.meta.get("preset") == "lmm":
            np.save(folder / LMM_POSITIONS_FILE, _narrow(indices_to_positions(self.score_order, self.grid[1:])))
        else:
            np.save(folder / ENCODER_INDICES_FILE, _narrow(self.visible_indices))
        np.save(folder / FRAME_IDS_FILE, self.frame_ids.astype(np.int32))
        if self.scores is not None:
            np.save(folder / SCORES_FILE, self.scores.astype(np.float32))
        meta = {**self.meta, "grid": list(self.grid), "motion_source": self.motion_source}
        meta[RECORD] = new_record(folder, made_from)
        (folder / META_FILE).write_text(json.dumps(meta, indent=1))

    @classmethod
    def load(cls, folder: str | os.PathLike[str], grid: tuple[int, int, int] | None = None) -> CodecSelection:
        """Read a folder written by :meth:`save` (or the release's files; pass ``grid`` without meta.json)."""
        folder = Path(folder)
        meta_path = folder / META_FILE
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
        grid = tuple(meta.get("grid") or grid or ())
        if len(grid) != 3:
            raise ValueError(f"{folder}: no {META_FILE}; pass grid=(T, Hp, Wp) to read bare index files")
        t, hp, wp = (int(v) for v in grid)
        if (folder / LMM_POSITIONS_FILE).is_file():
            positions = _load_indices(folder / LMM_POSITIONS_FILE)
            if positions.ndim != 2 or positions.shape[1] != 3:
                raise ValueError(f"{folder / LMM_POSITIONS_FILE}: expected K x 3 positions, got {positions.shape}")
            score_order = positions[:, 0] * hp * wp + positions[:, 1] * wp + positions[:, 2]
        elif (folder / ENCODER_INDICES_FILE).is_file():
            score_order = _load_indices(folder / ENCODER_INDICES_FILE).reshape(-1)
        else:
            raise FileNotFoundError(f"{folder}: neither {LMM_POSITIONS_FILE} nor {ENCODER_INDICES_FILE} found")
        check_visible_indices(score_order, 1, t * hp * wp, name=f"indices in {folder}")
        frame_ids_path = folder / FRAME_IDS_FILE
        scores_path = folder / SCORES_FILE
        return cls(
            visible_indices=np.sort(score_order),
            score_order=score_order,
            frame_ids=np.load(frame_ids_path).astype(np.int32)
            if frame_ids_path.is_file()
            else np.arange(t, dtype=np.int32),
            grid=(t, hp, wp),
            scores=np.load(scores_path) if scores_path.is_file() else None,
            motion_source=str(meta.get("motion_source", "unknown")),
            meta=meta,
        )


def _narrow(values: np.ndarray) -> np.ndarray:
    """int32 where it fits, else int64 (never int16, which overflowed in the release)."""
    return (
        values.astype(np.int32)
        if values.size == 0 or values.max() <= np.iinfo(np.int32).max
        else values.astype(np.int64)
    )


def _load_indices(path: Path) -> np.ndarray:
    values = np.load(path)
    if not np.issubdtype(values.dtype, np.integer):
        raise ValueError(f"{path}: indices must be integers, got {values.dtype}")
    if values.dtype.itemsize < 4 and (values < 0).any():
        raise ValueError(f"{path}: {values.dtype} indices overflowed (negative values); regenerate as int32")
    return values.astype(np.int64)
