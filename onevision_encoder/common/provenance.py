"""What made an output: its input's and model's identity by content, the options that change it, and the
package version; and what differs between two such records.

A batch command records this beside each finished item and resumes an item only when its record
matches. Identity is by content, not by path, size or time: a dataset copied to another machine
(times changed) is still the same input, and retrained weights saved over a checkpoint (sizes kept) are
not the same model (:func:`same_content` reads a file again only when its size or time changed). Standard
library only, so workers and ``--help`` stay light.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

SAMPLE_BYTES = 1 << 20  # a video is fingerprinted by its size and three 1 MiB samples: cheap on terabytes
_CHUNK = 1 << 22


def file_fingerprint(path: str | os.PathLike[str]) -> str:
    """``"SIZE:SHA256"`` of a file's size and its first, middle and last MiB (all of it when smaller).

    Re-encoding, trimming or replacing a video changes it; copying or touching it does not. (An edit of
    the same size that spares the three samples goes unseen: videos are not edited in place.)
    """
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        starts = [0] if size <= 3 * SAMPLE_BYTES else [0, (size - SAMPLE_BYTES) // 2, size - SAMPLE_BYTES]
        for start in starts:
            handle.seek(start)
            digest.update(handle.read(SAMPLE_BYTES if len(starts) == 3 else size))
    return f"{size}:{digest.hexdigest()}"


def file_identity(path: str | os.PathLike[str]) -> dict[str, Any]:
    """What :func:`same_content` checks a file against later: its size, modification time and fingerprint."""
    status = os.stat(path)
    return {"size": status.st_size, "mtime_ns": status.st_mtime_ns, "fingerprint": file_fingerprint(path)}


def same_content(recorded: Mapping[str, Any], path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` holds the file a :func:`file_identity` describes. An unchanged size and modification
    time are taken as unchanged content without reading it (rsync's quick check: a resume over a million
    finished videos reads none of them); otherwise the fingerprint decides, so a copy (new times) is the
    same file and a re-encoded one is not."""
    status = os.stat(path)
    if (status.st_size, status.st_mtime_ns) == (recorded.get("size"), recorded.get("mtime_ns")):
        return True
    return status.st_size == recorded.get("size") and file_fingerprint(path) == recorded.get("fingerprint")


def content_hash(paths: Iterable[str | os.PathLike[str]]) -> str:
    """SHA-256 over the whole content of files (a checkpoint's weights and config), named by file name so
    that a renamed or missing file changes it; the order given does not matter."""
    digest = hashlib.sha256()
    for path in sorted(Path(p) for p in paths):
        digest.update(f"{path.name}\0".encode())
        with open(path, "rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
        digest.update(b"\0")
    return digest.hexdigest()


def package_version() -> str:
    """This package's version, as installed (one source: pyproject.toml)."""
    from importlib.metadata import version

    return version("onevision-encoder")


def differences(recorded: Mapping[str, Any], now: Mapping[str, Any]) -> list[str]:
    """``"KEY X there, Y now"`` for each key whose value differs between two records (missing: ``null``)."""
    return [
        f"{key} {_short(recorded.get(key))} there, {_short(now.get(key))} now"
        for key in sorted(set(recorded) | set(now))
        if recorded.get(key) != now.get(key)
    ]


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 80 else text[:77] + "..."
