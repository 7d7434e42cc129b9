"""Training data: a JSONL manifest or WebDataset-style tar shards, read as per-head sample streams;
a manifest's lines as written, read and rewritten (:class:`ManifestRecord`, ``onevision concepts``).

Manifest (one JSON object per line, paths relative to the manifest's folder unless absolute)::

    {"path": "images/cat.jpg", "head": "image", "labels": [3, 17, 2]}
    {"path": "scans/page.png", "head": "ocr", "labels": [120, 7, 99]}
    {"path": "videos/walk.mp4", "head": "video", "labels": [5, 9], "selection": "sel/walk.mp4"}

``selection`` is optional: a folder written by ``onevision select`` / ``onevision preprocess``
(encoder preset). Tar shards hold the same samples as ``KEY.json`` (the object above without
``path``) beside ``KEY.<jpg|jpeg|png|webp|mp4|mkv|webm|avi|mov>`` and optionally
``KEY.visidx.npy`` and ``KEY.frame_ids.npy``; a shard is unpacked into a cache folder once.

Streams are deterministic functions of (seed, epoch, position): the global order is a seeded
permutation per epoch and every step consumes one global batch, so a run resumes at the same
sample on any number of processes.
"""

from __future__ import annotations

import json
import os
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..common.files import atomic_write
from .seeds import sample_seed

HEADS = ("image", "ocr", "video")
MEDIA_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".mp4", ".mkv", ".webm", ".avi", ".mov")


class ManifestError(ValueError):
    """A manifest line (or tar member) that cannot be used; the message names file and line."""


@dataclass(frozen=True)
class Sample:
    path: Path
    head: str
    labels: tuple[int, ...]
    selection: Path | None = None
    source: str = ""  # "file:line" for error messages


def manifest_lines(manifest: str | Path) -> list[tuple[int, str, dict]]:
    """``(line number, "file:line", object)`` for each non-blank line of a JSONL manifest; a line that is
    not a JSON object, or a sample without ``path`` or with an unknown ``head``, raises naming the line."""
    manifest = Path(manifest)
    if not manifest.is_file():
        raise ManifestError(f"{manifest}: no such manifest")
    lines = []
    for number, line in enumerate(manifest.read_text().splitlines(), 1):
        if not line.strip():
            continue
        where = f"{manifest}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise ManifestError(f"{where}: not valid JSON ({error.msg}, column {error.colno})") from None
        if not isinstance(record, dict):
            raise ManifestError(f"{where}: expected a JSON object, got {type(record).__name__}")
        if not isinstance(record.get("path"), str) or not record["path"]:
            raise ManifestError(f"{where}: no 'path' (each line needs the sample's file as \"path\")")
        if record.get("head", "image") not in HEADS:
            raise ManifestError(f"{where}: unknown head {record['head']!r}; choose one of {HEADS}")
        lines.append((number, where, record))
    if not lines:
        raise ManifestError(f"{manifest}: the manifest holds no sample")
    return lines


@dataclass(frozen=True)
class ManifestRecord:
    """One manifest line as written (any keys kept): its number, the JSON object and the media file it
    names. What tools that rewrite a manifest read (``onevision concepts``); training reads :class:`Sample`."""

    line_no: int
    data: dict[str, Any]
    path: Path
    head: str

    @property
    def is_video(self) -> bool:
        return self.head == "video"


# Keys that hold paths relative to the manifest's folder; rewritten when the new manifest lives elsewhere.
PATH_KEYS = ("path", "selection")


def read_records(manifest: str | os.PathLike[str], check_files: bool = True) -> list[ManifestRecord]:
    """The samples of a JSONL manifest in order (blank lines skipped); problems raise ``ValueError``
    naming ``manifest:line``."""
    manifest = Path(manifest)
    records = []
    for number, where, data in manifest_lines(manifest):
        path = manifest.parent / data["path"]
        if check_files and not path.is_file():
            raise ValueError(f"{where}: {path}: no such file")
        records.append(ManifestRecord(number, data, path, data.get("head", "image")))
    return records


def write_manifest(
    records: Sequence[ManifestRecord],
    manifest: str | os.PathLike[str],
    out_manifest: str | os.PathLike[str],
    labels: dict[int, Sequence[int]],
) -> Path:
    """Write ``out_manifest`` (atomically): ``records`` (read from ``manifest``) in order with their keys,
    ``labels`` replaced where ``labels`` has the line number, and relative paths made relative to the new
    manifest's folder."""
    old_base = Path(os.path.abspath(Path(manifest).parent))
    new_base = Path(os.path.abspath(Path(out_manifest).parent))
    lines = []
    for record in records:
        data = dict(record.data)
        for key in PATH_KEYS:
            if isinstance(data.get(key), str) and data[key]:
                data[key] = _relocate(data[key], old_base, new_base)
        if record.line_no in labels:
            data["labels"] = [int(v) for v in labels[record.line_no]]
        lines.append(json.dumps(data, ensure_ascii=False) + "\n")
    return atomic_write(out_manifest, "".join(lines).encode("utf-8"))


def _relocate(value: str, old_base: Path, new_base: Path) -> str:
    """A path relative to ``old_base`` made relative to ``new_base`` (absolute paths stay as they are)."""
    if os.path.isabs(value) or old_base == new_base:
        return value
    return Path(os.path.relpath(os.path.abspath(old_base / value), new_base)).as_posix()


def read_manifest(manifest: str | Path, check_files: bool = True) -> list[Sample]:
    """Training samples of a JSONL manifest (or tar shards); every problem raises :class:`ManifestError`
    naming ``file:line``."""
    manifest = Path(manifest)
    if manifest.suffix == ".tar" or manifest.is_dir():
        return read_shards([manifest] if manifest.is_file() else sorted(manifest.glob("*.tar")))
    return [_sample(record, manifest.parent, where, check_files) for _, where, record in manifest_lines(manifest)]


def _sample(record: dict, base: Path, where: str, check_files: bool) -> Sample:
    head = record.get("head", "image")
    labels = record.get("labels")
    if not isinstance(labels, list) or not labels or not all(isinstance(v, int) and v >= 0 for v in labels):
        raise ManifestError(f"{where}: 'labels' must be a non-empty list of non-negative integers")
    path = base / record["path"]
    if check_files and not path.is_file():
        raise ManifestError(f"{where}: {path}: no such file")
    selection = base / record["selection"] if record.get("selection") else None
    if check_files and selection is not None and not selection.is_dir():
        raise ManifestError(f"{where}: selection {selection}: no such folder")
    return Sample(path, head, tuple(labels), selection, where)


def read_shards(shards: list[Path], cache: Path | None = None) -> list[Sample]:
    """Samples of WebDataset-style tar shards (unpacked once into ``cache``, default beside each shard)."""
    samples = []
    for shard in shards:
        folder = cache or shard.with_suffix(".unpacked")
        if not (folder / ".complete").is_file():
            folder.mkdir(parents=True, exist_ok=True)
            try:
                with tarfile.open(shard) as archive:
                    archive.extractall(folder, filter="data")
            except (tarfile.TarError, OSError) as error:
                raise ManifestError(f"{shard}: not a readable tar shard ({error})") from None
            (folder / ".complete").write_text("")
        for meta in sorted(folder.rglob("*.json")):
            key = meta.name[: -len(".json")]
            where = f"{shard}:{key}"
            try:
                record = json.loads(meta.read_text())
            except json.JSONDecodeError as error:
                raise ManifestError(f"{where}: not valid JSON ({error.msg})") from None
            media = [p for p in meta.parent.glob(f"{key}.*") if p.suffix.lower() in MEDIA_SUFFIXES]
            if len(media) != 1:
                raise ManifestError(f"{where}: expected one media file beside {meta.name}, found {len(media)}")
            record = {**record, "path": media[0].name}
            if record.get("head", "image") not in HEADS:
                raise ManifestError(f"{where}: unknown head {record['head']!r}; choose one of {HEADS}")
            if (meta.parent / f"{key}.visidx.npy").is_file():
                selection = meta.parent / f"{key}.selection"
                selection.mkdir(exist_ok=True)
                for name in ("visidx.npy", "frame_ids.npy"):
                    if (meta.parent / f"{key}.{name}").is_file():
                        (selection / name).write_bytes((meta.parent / f"{key}.{name}").read_bytes())
                record["selection"] = selection.name
            samples.append(_sample(record, meta.parent, where, check_files=True))
    return samples


@dataclass
class HeadStream:
    """The samples of one head in a seeded order; each step takes one global batch.

    ``position`` counts samples consumed globally in ``epoch``; rank ``r`` of ``world`` takes the
    ``batch_size`` samples starting at ``position + r * batch_size``.
    """

    samples: list[Sample]
    head_index: int
    seed: int
    epoch: int = 0
    position: int = 0
    _order: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64), repr=False)

    def __post_init__(self) -> None:
        if not self.samples:
            raise ValueError("a head stream needs at least one sample")
        self._shuffle()

    def _shuffle(self) -> None:
        rng = np.random.default_rng(sample_seed(self.seed, self.head_index, self.epoch))
        self._order = rng.permutation(len(self.samples))

    def next_batch(self, batch_size: int, rank: int, world: int) -> list[tuple[Sample, int]]:
        """This rank's samples of the next global batch, each with its per-sample seed."""
        picks = []
        start = self.position + rank * batch_size
        for offset in range(batch_size):
            epoch, index = self.epoch, start + offset
            while index >= len(self.samples) * (epoch - self.epoch + 1):
                epoch += 1
            order = self._order if epoch == self.epoch else _order_for(self, epoch)
            local = index - len(self.samples) * (epoch - self.epoch)
            picks.append((self.samples[order[local]], sample_seed(self.seed, self.head_index, epoch, local)))
        self.position += batch_size * world
        while self.position >= len(self.samples):
            self.position -= len(self.samples)
            self.epoch += 1
            self._shuffle()
        return picks

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self._shuffle()


def _order_for(stream: HeadStream, epoch: int) -> np.ndarray:
    return np.random.default_rng(sample_seed(stream.seed, stream.head_index, epoch)).permutation(len(stream.samples))


def split_by_head(samples: list[Sample]) -> dict[str, list[Sample]]:
    heads: dict[str, list[Sample]] = {}
    for sample in samples:
        heads.setdefault(sample.head, []).append(sample)
    return heads
