"""Features on disk in parts, read row by row on demand: the one format of ``onevision encode``'s
feature folders and of the probe's feature cache.

A dataset's features do not fit in memory (Kinetics-400 at 2048 tokens x 1024 channels is about
1 TB in bfloat16), so a feature folder holds:

- ``index.json``: the format, the job that made the features (the model's content hash, options),
  ``rows_per_part``, and every input in row order with its name, path, part and row;
- ``part-NNNNN.safetensors``: rows ``N * rows_per_part`` onwards, each as ``ROW.features`` (plus
  ``ROW.positions_thw`` and ``ROW.frame_ids`` where known); the rows whose input failed are listed
  with their errors in the part's metadata instead, beside the record of what made the part (for
  ``onevision encode``: the job, the package version and each input's identity).

Each part is written atomically once all its rows are done, so an interrupted job resumes at the
missing parts, and readers memory-map only the rows they ask for.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save

from ..common.files import atomic_write
from ..common.provenance import content_hash, differences

FORMAT = "onevision-features/1"
INDEX_FILE = "index.json"
CLIPS_PER_PART = 64
_PART_NAME = re.compile(r"part-(\d{5,})\.safetensors")


class JobMismatchError(ValueError):
    """The folder holds the features of another job (other inputs, model or options); ``differences``
    says what differs, one ``"KEY X there, Y now"`` each."""

    def __init__(self, folder: Path, differences: list[str]) -> None:
        self.folder, self.differences = folder, differences
        super().__init__(
            f"{folder} holds the features of another job ({'; '.join(differences)}): write to a new folder, "
            "or delete this one to start again"
        )


class FailedRowError(ValueError):
    """The row's input could not be encoded: the part records why instead of its features."""


class FeatureStore:
    """Features of ``num_clips`` rows in parts of ``clips_per_part``; ``store[rows]`` stacks the token
    features ``[len(rows), N, D]`` (``[N, D]`` for one integer), :meth:`row` gives all of one row's arrays.

    :meth:`open` reads a folder through its ``index.json`` (names and paths of the rows included);
    :meth:`create` writes that index for a new job, or checks that the folder's job is this one.
    """

    def __init__(
        self,
        folder: str | Path,
        num_clips: int,
        clips_per_part: int = CLIPS_PER_PART,
        inputs: Sequence[tuple[str, str]] | None = None,
    ) -> None:
        if num_clips < 1 or clips_per_part < 1:
            raise ValueError(f"a feature store needs clips (got {num_clips}) and parts of >= 1 clip")
        if inputs is not None and len(inputs) != num_clips:
            raise ValueError(f"{len(inputs)} inputs named for {num_clips} rows")
        self.folder = Path(folder)
        self.num_clips = num_clips
        self.clips_per_part = clips_per_part
        self.inputs = None if inputs is None else [tuple(pair) for pair in inputs]  # (path, name) per row
        self._rows_by_name: dict[str, int] | None = None

    @classmethod
    def create(
        cls,
        folder: str | Path,
        job: Mapping[str, Any],
        inputs: Sequence[tuple[str, str]],
        clips_per_part: int = CLIPS_PER_PART,
        replace: bool = False,
        about: Mapping[str, Any] | None = None,
    ) -> FeatureStore:
        """The store of ``job`` (a JSON-able description of what makes the features) over ``inputs``
        (``(path, name)`` per row) in ``folder``: its index is written, or, when the folder already
        has one, checked to be this job's (:class:`JobMismatchError` says what differs), or with
        ``replace`` written over when it is another job's (its parts are then the caller's to check).
        ``about`` (JSON-able) is written beside the job, for readers, and never compared."""
        folder = Path(folder)
        index = _index(job, inputs, clips_per_part, about)
        existing = folder / INDEX_FILE
        found = _job_differences(_read_index(existing), index) if existing.is_file() else None
        if found and not replace:
            raise JobMismatchError(folder, found)
        if found is None or found:
            atomic_write(existing, _dump_index(index))
        return cls(folder, len(inputs), clips_per_part, inputs)

    @classmethod
    def open(cls, folder: str | Path) -> FeatureStore:
        """The store written in ``folder`` (by ``onevision encode`` or the probe's cache)."""
        index = _read_index(Path(folder) / INDEX_FILE)
        inputs = [(entry["path"], entry["name"]) for entry in index["inputs"]]
        return cls(folder, len(inputs), index["rows_per_part"], inputs)

    @property
    def num_parts(self) -> int:
        return -(-self.num_clips // self.clips_per_part)

    def part_path(self, part: int) -> Path:
        return self.folder / f"part-{part:05d}.safetensors"

    def part_rows(self, part: int) -> range:
        start = part * self.clips_per_part
        return range(start, min(start + self.clips_per_part, self.num_clips))

    def has_part(self, part: int) -> bool:
        return self.part_path(part).is_file()

    def written_parts(self) -> list[int]:
        """The numbers of the part files in the folder, this job's or not (a job of more rows left more)."""
        found = (_PART_NAME.fullmatch(path.name) for path in self.folder.glob("part-*.safetensors"))
        return sorted(int(match.group(1)) for match in found if match)

    def part_record(self, part: int) -> dict[str, Any] | None:
        """What made part ``part``, as given to :meth:`write_part` (``None`` if it was written without)."""
        with self._open(part) as handle:
            metadata = handle.metadata() or {}
        if metadata.get("format") != FORMAT:
            raise ValueError(f"{self.part_path(part)}: not a feature part of format {FORMAT}")
        return json.loads(metadata["record"]) if "record" in metadata else None

    def missing_parts(self) -> list[int]:
        return [part for part in range(self.num_parts) if not self.has_part(part)]

    def write_part(
        self,
        part: int,
        rows: torch.Tensor | Mapping[int, Mapping[str, torch.Tensor]],
        failures: Sequence[Mapping[str, Any]] = (),
        record: Mapping[str, Any] | None = None,
    ) -> None:
        """Write part ``part`` atomically: ``rows`` maps each row to its arrays (``features`` at least),
        or is the features ``[rows, N, D]`` of all the part's rows; ``failures`` hold ``{"row", ...}``
        records (path, error, message) for the rows that have no features. Together they cover the
        part's rows exactly. ``record`` (JSON-able) says what made the part (:meth:`part_record`)."""
        expected = self.part_rows(part)
        if isinstance(rows, torch.Tensor):
            if rows.ndim != 3 or len(rows) != len(expected):
                raise ValueError(
                    f"part {part} holds {len(expected)} clips: expected [{len(expected)}, N, D], got {rows.shape}"
                )
            rows = {row: {"features": features} for row, features in zip(expected, rows, strict=True)}
        failed = [record["row"] for record in failures]
        if sorted([*rows, *failed]) != list(expected):
            raise ValueError(f"part {part} holds rows {expected.start}..{expected.stop - 1}: got {sorted(rows)} "
                             f"encoded and {sorted(failed)} failed")  # fmt: skip
        tensors = {
            f"{row}.{key}": array.detach().contiguous() for row, arrays in rows.items() for key, array in arrays.items()
        }
        metadata = {"format": FORMAT, "rows": f"{expected.start}:{expected.stop}", "failures": json.dumps(failures)}
        if record is not None:
            metadata["record"] = json.dumps(record)
        atomic_write(self.part_path(part), save(tensors, metadata=metadata))

    def remove_unfinished(self, parts: Iterable[int]) -> None:
        """Delete the temporary files that a killed writer of these parts left behind."""
        for part in parts:
            for leftover in self.folder.glob(f".{self.part_path(part).name}.*.tmp*"):
                leftover.unlink(missing_ok=True)

    def __len__(self) -> int:
        return self.num_clips

    @property
    def shape(self) -> tuple[int, ...]:
        """``(rows, *shape of the first encoded row's features)``."""
        for part in range(self.num_parts):
            if not self.has_part(part):
                continue
            with self._open(part) as handle:
                names = set(handle.keys())
                for row in self.part_rows(part):
                    if f"{row}.features" in names:
                        return self.num_clips, *handle.get_slice(f"{row}.features").get_shape()
        raise FileNotFoundError(f"{self.folder}: no part holds features yet")

    def __getitem__(self, rows: int | slice | Sequence[int] | torch.Tensor) -> torch.Tensor:
        """The features of ``rows`` in the order asked, stacked (``[N, D]`` for one integer index)."""
        wanted = torch.arange(self.num_clips)[rows]
        if wanted.ndim == 0:
            return self[wanted[None]][0]
        found = self._read(wanted.tolist(), ("features",))
        features = [found[row]["features"] for row in wanted.tolist()]
        if len({tuple(f.shape) for f in features}) > 1:
            raise ValueError(f"{self.folder}: these rows' features differ in shape; read them one by one (store.row)")
        return torch.stack(features) if features else torch.empty(0)

    def row(self, key: int | str) -> dict[str, torch.Tensor]:
        """Every array of one row (``features``, ``positions_thw``, ``frame_ids`` where known), by row
        number or by input name; :class:`FailedRowError` when its input failed."""
        row = self.row_of(key) if isinstance(key, str) else int(key)
        if not 0 <= row < self.num_clips:
            raise IndexError(f"row {row} is out of range: the store has {self.num_clips} rows")
        return self._read([row], None)[row]

    def row_of(self, name: str) -> int:
        if self.inputs is None:
            raise KeyError(f"{self.folder}: a store opened without its index has no names")
        if self._rows_by_name is None:
            self._rows_by_name = {input_name: row for row, (_, input_name) in enumerate(self.inputs)}
        if name not in self._rows_by_name:
            raise KeyError(f"{self.folder}: no input named {name!r}")
        return self._rows_by_name[name]

    def failures(self, parts: Iterable[int] | None = None) -> list[dict[str, Any]]:
        """The failure records of the written parts among ``parts`` (default all), in row order."""
        records: list[dict[str, Any]] = []
        for part in range(self.num_parts) if parts is None else parts:
            if self.has_part(part):
                with self._open(part) as handle:
                    records += json.loads((handle.metadata() or {}).get("failures", "[]"))
        return sorted(records, key=lambda record: record["row"])

    def _read(self, rows: list[int], keys: Sequence[str] | None) -> dict[int, dict[str, torch.Tensor]]:
        by_part: dict[int, list[int]] = {}
        for row in rows:
            by_part.setdefault(row // self.clips_per_part, []).append(row)
        found: dict[int, dict[str, torch.Tensor]] = {}
        for part, part_rows in by_part.items():
            with self._open(part) as handle:
                names = set(handle.keys())
                failed = {r["row"]: r for r in json.loads((handle.metadata() or {}).get("failures", "[]"))}
                for row in part_rows:
                    if row in failed:
                        record = failed[row]
                        raise FailedRowError(f"{record['path']}: not encoded ({record['error']}: {record['message']})")
                    prefix = f"{row}."
                    wanted = [n for n in names if n.startswith(prefix)] if keys is None else [prefix + k for k in keys]
                    missing = [n for n in wanted if n not in names] or ([] if wanted else [f"{prefix}features"])
                    if missing:
                        raise ValueError(f"{self.part_path(part)}: no tensor {missing[0]} (not a feature part of "
                                         f"this format; delete it to extract again)")  # fmt: skip
                    found[row] = {n[len(prefix) :]: handle.get_tensor(n) for n in wanted}
        return found

    def _open(self, part: int) -> Any:
        path = self.part_path(part)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: this part of the feature cache was not written (extraction unfinished)")
        try:
            return safe_open(path, "pt")
        except Exception as error:  # safetensors raises its own error types, naming no file
            raise ValueError(f"{path}: unreadable feature-cache part ({error}); delete it to extract again") from None


def _index(
    job: Mapping[str, Any], inputs: Sequence[tuple[str, str]], clips_per_part: int, about: Mapping[str, Any] | None
) -> dict[str, Any]:
    entries = [
        {"row": row, "part": row // clips_per_part, "name": name, "path": path}
        for row, (path, name) in enumerate(inputs)
    ]
    return {"format": FORMAT, "rows": len(entries), "rows_per_part": clips_per_part, "job": dict(job),
            **({"about": dict(about)} if about else {}), "inputs": entries}  # fmt: skip


def _dump_index(index: Mapping[str, Any]) -> bytes:
    """JSON with one line per input: readable, and still small for millions of inputs."""
    head = json.dumps({key: value for key, value in index.items() if key != "inputs"}, indent=1)[:-2]
    entries = ",\n  ".join(json.dumps(entry) for entry in index["inputs"])
    return f'{head},\n "inputs": [\n  {entries}\n ]\n}}\n'.encode()


def _read_index(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"{path.parent}: not a feature folder (no {INDEX_FILE})")
    try:
        index = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"{path}: unreadable index ({error})") from None
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        found = index.get("format") if isinstance(index, dict) else None
        raise ValueError(f"{path}: not a feature index of format {FORMAT} (found {found!r})")
    return index


def _job_differences(found: Mapping[str, Any], wanted: Mapping[str, Any]) -> list[str]:
    """What differs between the folder's job (index) and this one."""
    found_differences = differences(found.get("job", {}), wanted["job"])
    if found.get("rows_per_part") != wanted["rows_per_part"]:
        found_differences.append(f"rows per part {found.get('rows_per_part')} there, {wanted['rows_per_part']} now")
    old_inputs = [(entry["path"], entry["name"]) for entry in found.get("inputs", [])]
    new_inputs = [(entry["path"], entry["name"]) for entry in wanted["inputs"]]
    if old_inputs != new_inputs:
        old_set, new_set = set(old_inputs), set(new_inputs)
        added = [path for path, name in new_inputs if (path, name) not in old_set]
        gone = [path for path, name in old_inputs if (path, name) not in new_set]
        what = [f"{len(added)} new (e.g. {added[0]})"] if added else []
        what += [f"{len(gone)} no longer given (e.g. {gone[0]})"] if gone else []
        found_differences.append(f"inputs: {', '.join(what) or 'the same, in another order'}")
    return found_differences


def model_identity(model: str) -> str:
    """The SHA-256 of a checkpoint's content (:func:`~.provenance.content_hash` of its ``config.json`` and
    weights, :func:`~.model.loading.checkpoint_files`): a local folder's, or a hub id's files in the local
    Hugging Face cache, the same hash for the same files whichever way they are reached. Weights saved
    over a checkpoint change it whatever their size and time; a copy elsewhere (another path, other
    times) keeps it. Reading the files costs about 1.4 s per 1.2 GB on 2 CPU cores
    (``benchmarks/bench_model_hash.py``)."""
    from ..model.loading import checkpoint_files

    files = checkpoint_files(model)
    if files is None:  # a hub id not downloaded yet: from_pretrained fetches it, or says why it cannot
        from ..model import OneVisionEncoderModel

        OneVisionEncoderModel.from_pretrained(model)
        files = checkpoint_files(model)
        if files is None:
            raise FileNotFoundError(f"{model}: no config.json found for this model")
    return content_hash(files)
