"""A selection folder's record of what made it, and what a command may do with a folder found in its way.

:meth:`~onevision_encoder.codec.CodecSelection.write_files` records in ``meta.json``, under ``made_by``,
the package and its version, every file it wrote (``files``) and, for a command, the input's identity
(``input``: the path as given, its size, time and :func:`~onevision_encoder.common.provenance.file_fingerprint`)
and the options that make the content (``options``). With that record a command

- reuses a folder only when it was made from the same input with the same options (another package
  version alone is only noted);
- replaces a folder made otherwise, or one an earlier version wrote (no record; known by its files), only
  when asked to (``--overwrite``);
- never replaces a folder holding anything it did not write, nor a file or a link in a folder's place.

Standard library only: the checks run in the main process, before any work.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..common.provenance import differences, file_identity, package_version, same_content
from .options import SelectionOptions

RECORD = "made_by"
PACKAGE = "onevision-encoder"
META_FILE = "meta.json"
FRAME_IDS_FILE = "frame_ids.npy"
SCORES_FILE = "scores.npy"
ENCODER_INDICES_FILE = "visidx.npy"  # K ascending flat indices (encoder preset)
LMM_POSITIONS_FILE = "visidx_thw.npy"  # K x 3 (t, h, w) in score order (lmm preset)
# A packed selection (`preprocess --pack`, read by the LMM processor): mosaic_K.<format> + their patches' (t, h, w).
PACK_POSITIONS_FILE = "positions_thw.npy"
# What the versions before the record wrote (and all a folder of theirs may hold to be replaced).
_EARLIER_FILES = frozenset(
    {META_FILE, FRAME_IDS_FILE, SCORES_FILE, ENCODER_INDICES_FILE, LMM_POSITIONS_FILE, PACK_POSITIONS_FILE}
)
_EARLIER_MOSAIC = re.compile(r"mosaic_\d+\.(jpg|png)")
_SHOWN = 4  # differences (or foreign files) named in a message; the rest are counted


def recorded_options(options: Mapping[str, Any], pack: bool = False, image_format: str | None = None) -> dict[str, Any]:
    """The options that make a folder's content, as recorded: ``select_patches``'s keywords with the preset's
    values filled in (so ``--preset encoder`` and its values spelled out are the same), and whether it is
    packed, in which image format."""
    resolved = asdict(SelectionOptions.resolve(**options))
    del resolved["keep_frames"]  # what the selection keeps in memory, not what it writes
    resolved.update(pack=pack, image_format=image_format if pack else None)
    return json.loads(json.dumps(resolved))  # tuples as lists: compared with what meta.json gives back


def made_from(video: str | os.PathLike[str], options: Mapping[str, Any]) -> dict[str, Any]:
    """What a command records of what made a folder: ``options`` (:func:`recorded_options`) and the input."""
    return {"input": {"path": str(video), **file_identity(video)}, "options": dict(options)}


def new_record(folder: str | os.PathLike[str], made: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The record of a folder just written: the package, its version, ``made`` (:func:`made_from`) and every
    file in it (``meta.json``, written last, included)."""
    files = sorted({*os.listdir(folder), META_FILE})
    return {"package": PACKAGE, "version": package_version(), **(made or {}), "files": files}


class FolderNotOursError(FileExistsError):
    """A folder this tool would replace holds something it did not write (or is not a folder)."""

    def __init__(self, folder: str | os.PathLike[str], problem: str) -> None:
        super().__init__(f"{folder} {problem}")


def check_ours(folder: Path, shown_as: Path | None = None) -> None:
    """Raise :class:`FolderNotOursError` (naming ``shown_as``, default ``folder``) unless replacing ``folder``
    loses nothing this tool did not write. A check of :func:`~onevision_encoder.common.files.replace_folder`."""
    problem = _not_ours(folder, _read_meta(folder))
    if problem is not None:
        raise FolderNotOursError(shown_as or folder, problem)


@dataclass(frozen=True)
class Found:
    """What stands where a selection folder is to go, as one run sees it."""

    folder: Path
    reusable: bool = False  # made from this run's input with its options
    differences: tuple[str, ...] = ()  # how it was made otherwise, when it was
    version: str | None = None  # the package version that made it, when not this one
    not_ours: str | None = None  # what replacing it would lose: it cannot be replaced

    def made_otherwise(self) -> str:
        """``FOLDER was made otherwise (DIFFERENCE; ...)``."""
        shown = "; ".join(self.differences[:_SHOWN])
        more = len(self.differences) - _SHOWN
        return f"{self.folder} was made otherwise ({shown}{f'; and {more} more' if more > 0 else ''})"

    def refusal(self) -> str:
        """``FOLDER holds files this tool did not write: ...; move them ...``."""
        return f"{self.folder} {self.not_ours}"


def examine(folder: Path, video: str | os.PathLike[str], options: Mapping[str, Any]) -> Found:
    """What stands at ``folder``, for a run that would make it from ``video`` with ``options``
    (:func:`recorded_options`). An empty folder is as good as none. An input that cannot be read is not
    compared (the run fails on it, leaving the folder as it is)."""
    if not os.path.lexists(folder) or (folder.is_dir() and not folder.is_symlink() and not os.listdir(folder)):
        return Found(folder)  # nothing to reuse, nothing to lose
    meta = _read_meta(folder)
    not_ours = _not_ours(folder, meta)
    record = meta.get(RECORD) if meta is not None else None
    if not isinstance(record, dict) or not {"input", "options"} <= set(record):
        if isinstance(record, dict):
            why = "saved without a record of its input and options"
        elif _is_earlier_selection(meta):
            why = "written by an earlier version of onevision, with no record of its input and options"
        else:
            why = "not a selection folder"
        return Found(folder, differences=(why,), not_ours=not_ours)
    # The preset first: a different preset explains the other values' differences.
    found = sorted(differences(record["options"], options), key=lambda line: not line.startswith("preset "))
    try:
        same_input = same_content(record["input"], video)
    except OSError:
        same_input = None
    if same_input is False:
        was = record["input"].get("path")
        found.append(f"input changed: {video}" + ("" if was == str(video) else f" (made from {was})"))
    version = record.get("version")
    return Found(
        folder,
        reusable=same_input is True and not found,
        differences=tuple(found),
        version=None if version == package_version() else str(version),
        not_ours=not_ours,
    )


def _read_meta(folder: Path) -> dict[str, Any] | None:
    try:
        meta = json.loads((folder / META_FILE).read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def _is_earlier_selection(meta: dict[str, Any] | None) -> bool:
    return meta is not None and {"grid", "motion_source"} <= set(meta)  # what write_files always wrote


def _not_ours(folder: Path, meta: dict[str, Any] | None) -> str | None:
    """Why replacing ``folder`` would lose what this tool did not write, and what to do; ``None`` if it would not."""
    if folder.is_symlink() or not folder.is_dir():
        kind = "a symbolic link" if folder.is_symlink() else "a file"
        return f"is {kind}, not a folder this tool wrote; move it away or choose another output folder"
    entries = set(os.listdir(folder))
    record = meta.get(RECORD) if meta is not None else None
    if isinstance(record, dict) and isinstance(record.get("files"), list):
        foreign = entries - set(record["files"])
    elif _is_earlier_selection(meta):
        foreign = {name for name in entries if name not in _EARLIER_FILES and not _EARLIER_MOSAIC.fullmatch(name)}
    else:
        foreign = entries
    if not foreign:
        return None
    names = sorted(foreign)
    more = f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else ""
    return (
        f"holds files this tool did not write: {', '.join(names[:_SHOWN])}{more}; move them away or choose "
        "another output folder"
    )
