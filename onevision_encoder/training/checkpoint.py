"""Checkpoints that resume the same run, on the same or another number of processes.

A checkpoint folder ``step-NNNNNNNN/`` holds ``model.safetensors`` (the backbone), ``optimizer.pt``
(the backbone's AdamW state), ``trainer.json`` (step, scheduler, data positions, config), ``rng.pt``
(every rank's RNG states) and, for each head, every rank's slice of the class centres and of their
AdamW state, ``centres-HEAD.rankR.safetensors``, with the rows it covers in its metadata. Loading
reads whichever slices cover a rank's new range, so centres re-shard to any world size. The folder
is filled in a temporary place and renamed when every rank has written its part.

Every file a run writes in its folder is listed in ``OUT/run-files.json`` (:class:`RunFiles`), and only
those are ever deleted: by ``--overwrite``, by the retention of ``keep_checkpoints``, by an export over
``final/``.
"""

from __future__ import annotations

import fnmatch
import json
import os
import pickle
import random
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from ..common.distributed import rank_world
from ..common.files import atomic_write, remove_leftovers
from ..common.provenance import file_fingerprint
from ..model.loading import DamagedCheckpointError
from .sharding import is_sharded, load_whole_state, shard_optimizer_state, whole_optimizer_state, whole_state

CHECKPOINTS = "checkpoints"
RUN_FILES = "run-files.json"
RUN_FILES_FORMAT = "onevision-run-files/1"
# What a killed run leaves of its atomic writes (files.py's temporary names, a checkpoint's temporary folder):
# the next run removes them by name (clean_partial), so they are neither the run's record nor the user's.
_LEFTOVERS = (".*.tmp*", ".step-*.tmp")


class RunFiles:
    """The files a training run wrote in its folder, in ``OUT/run-files.json``: each by its path relative
    to the folder, with its :func:`~..provenance.file_fingerprint`, or ``None`` for the logs that grow as
    the run goes (``metrics.jsonl``, TensorBoard's events), known by name only.

    A name alone cannot tell a file of the user's saved in the run's folders, or over one of the run's
    files, and the names ``save_pretrained`` writes in ``final/`` change with transformers' version: so
    the run deletes only files listed here whose content is still what it wrote. Only rank 0 writes.
    """

    def __init__(self, out: str | os.PathLike[str]) -> None:
        self.out = Path(out)
        self.path = self.out / RUN_FILES

    def is_foreign_record(self) -> bool:
        """Whether ``run-files.json`` exists but is not a training run's record (a file of the user's)."""
        return self.path.exists() and self._load() is None

    def read(self) -> dict[str, str | None]:
        return self._load() or {}

    def _load(self) -> dict[str, str | None] | None:
        try:
            record = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):
            return None
        if not isinstance(record, dict) or record.get("format") != RUN_FILES_FORMAT:
            return None
        return dict(record.get("files", {}))

    def _write(self, files: dict[str, str | None]) -> None:
        record = {"format": RUN_FILES_FORMAT, "files": dict(sorted(files.items()))}
        atomic_write(self.path, json.dumps(record, indent=1).encode())

    def _key(self, path: Path) -> str:
        return path.relative_to(self.out).as_posix()

    def record_folder(self, folder: Path, source: Path | None = None) -> None:
        """List every file of ``source`` (default: ``folder`` itself) as the run's, at its place under
        ``folder``, in place of what was listed under ``folder``."""
        prefix = self._key(folder) + "/"
        files = {key: value for key, value in self.read().items() if not key.startswith(prefix)}
        source = folder if source is None else source
        for path in _files_under(source):
            files[prefix + path.relative_to(source).as_posix()] = file_fingerprint(path)
        self._write(files)

    def record_log(self, path: Path) -> None:
        """List ``path``, a log that grows as the run goes, as the run's by its name."""
        files = self.read()
        if files.get(self._key(path), "") is not None:
            self._write({**files, self._key(path): None})

    def foreign(self, target: Path) -> list[str]:
        """The files at or under ``target`` that the run did not write (not listed, changed since, or a
        link: the run writes none), by their paths relative to the run's folder."""
        files = self.read()
        found = []
        for path in _files_under(target, links=True):
            key = self._key(path)
            if _is_leftover(key):
                continue
            listed = files.get(key, "")
            if key not in files or path.is_symlink() or (listed is not None and file_fingerprint(path) != listed):
                found.append(key)
        return found

    def remove(self, target: Path) -> list[str]:
        """Delete the run's files at or under ``target`` and the folders this leaves empty; returns the
        files that stay (:meth:`foreign`)."""
        stay = self.foreign(target)
        files = self.read()
        key = self._key(target)
        for listed in [k for k in files if k == key or k.startswith(key + "/")]:
            if listed not in stay:
                (self.out / listed).unlink(missing_ok=True)
                del files[listed]
        if target.is_dir() and not target.is_symlink():
            for folder, _, _ in sorted(os.walk(target), key=lambda entry: -len(entry[0])):  # deepest first
                if not os.listdir(folder):
                    os.rmdir(folder)
        self._write(files)
        return stay


def _files_under(target: Path, links: bool = False) -> list[Path]:
    """``target`` if it is a file (or, with ``links``, a link), else the files in it, recursively, links
    not followed (and listed only with ``links``)."""
    if target.is_symlink() or not target.is_dir():
        return [target] if target.is_file() or (links and target.is_symlink()) else []
    found = []
    for folder, subfolders, names in os.walk(target):
        for name in sorted(names + [n for n in subfolders if os.path.islink(os.path.join(folder, n))]):
            path = Path(folder, name)
            if links or not path.is_symlink():
                found.append(path)
    return sorted(found)


def _is_leftover(key: str) -> bool:
    return any(fnmatch.fnmatchcase(part, pattern) for part in key.split("/") for pattern in _LEFTOVERS)


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
        run_files = RunFiles(out)
        stay = run_files.remove(final) if final.exists() else []  # this step's checkpoint again, over the old one
        if stay:
            raise FileExistsError(
                f"{out} holds {', '.join(stay)}, which training did not write: move it out and resume"
            )
        run_files.record_folder(final, source=temporary)  # listed first: a kill in between leaves nothing unlisted
        os.replace(temporary, final)
        for old in sorted(root.glob("step-*"))[:-keep] if keep > 0 else []:
            stay = run_files.remove(old)
            if stay:
                print(f"warning: {old} kept: it holds {', '.join(stay)}, which training did not write", file=sys.stderr)
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
