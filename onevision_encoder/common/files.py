"""Atomic file writes: a reader (or an interrupted run) never sees a half-written file.

Everything is written under a temporary name beside its target, ``.NAME.<tag><random>.tmp<suffix>``,
and renamed into place when complete. A killed run can leave such names behind; a later run
removes them with :func:`remove_leftovers`.

An output folder also gets its guards here: :func:`check_writable` before any work,
:func:`storage_fault` to tell a full or read-only disk from a bad input, and :func:`folder_lock` so
that two runs never write one folder at once.
"""

from __future__ import annotations

import errno
import fnmatch
import json
import os
import re
import shlex
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str | os.PathLike[str], tag: str = "") -> Iterator[Path]:
    """Yield a temporary file path beside ``path`` (same suffix, so tools that pick a format by
    suffix still work); once the block succeeds it is renamed onto ``path``, otherwise removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{tag}", suffix=f".tmp{path.suffix}")
    os.close(handle)
    temporary = Path(name)
    try:
        yield temporary
        os.chmod(temporary, 0o666 & ~_umask())  # mkstemp makes files private; give the usual permissions
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def atomic_write(path: str | os.PathLike[str], content: bytes | Callable[[BinaryIO], None]) -> Path:
    """Write ``content`` (bytes, or a function writing to a binary stream) to ``path`` atomically."""
    with atomic_path(path) as temporary, open(temporary, "wb") as stream:
        if isinstance(content, bytes):
            stream.write(content)
        else:
            content(stream)
        stream.flush()
        os.fsync(stream.fileno())
    return Path(path)


@contextmanager
def atomic_directory(
    path: str | os.PathLike[str], tag: str = "", check_replaceable: Callable[[Path, Path], None] | None = None
) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; on success it replaces ``path`` in one rename (a folder
    already there only if ``check_replaceable`` passes it: see :func:`replace_folder`).

    On any error (or interruption) the temporary folder is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.{tag}", suffix=".tmp"))
    try:
        os.chmod(temporary, 0o777 & ~_umask())  # mkdtemp makes folders private
        yield temporary
        replace_folder(temporary, path, tag, check_replaceable)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise


def replace_folder(
    source: str | os.PathLike[str],
    path: str | os.PathLike[str],
    tag: str = "",
    check_replaceable: Callable[[Path, Path], None] | None = None,
) -> None:
    """Put the folder ``source`` in ``path``'s place: a folder already there is moved aside in one rename
    (then deleted), so ``path`` is always either the old folder or the new one.

    ``check_replaceable(old, path)`` is called with the old folder once it is moved aside (nothing can land
    in it any more); if it raises, the old folder is put back untouched and the error goes up.
    """
    path = Path(path)
    if path.exists():
        retired = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.{tag}old-", suffix=".tmp"))
        os.replace(path, retired / "old")
        if check_replaceable is not None:
            try:
                check_replaceable(retired / "old", path)
            except BaseException:
                os.replace(retired / "old", path)
                retired.rmdir()
                raise
        os.replace(source, path)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        os.replace(source, path)


def remove_leftovers(root: str | os.PathLike[str], tag: str = "") -> int:
    """Delete the temporary files and folders that killed runs tagged ``tag`` left under ``root``; returns
    how many.

    Other runs (the other shards of a job) may be writing under ``root`` meanwhile: their temporary
    folders are theirs and not walked into, and a folder renamed away mid-walk is passed over.
    """
    ours = f".*.{tag}*.tmp*"
    removed = 0
    for folder, subfolders, names in os.walk(root):  # os.walk skips a folder that vanished; rglob raised
        for name in names:
            if fnmatch.fnmatchcase(name, ours):
                Path(folder, name).unlink(missing_ok=True)
                removed += 1
        walk_on = []
        for name in subfolders:
            if fnmatch.fnmatchcase(name, ours):
                shutil.rmtree(Path(folder, name), ignore_errors=True)
                removed += 1
            elif not fnmatch.fnmatchcase(name, ".*.tmp"):
                walk_on.append(name)
        subfolders[:] = walk_on
    return removed


def check_writable(folder: str | os.PathLike[str]) -> None:
    """Create, write, sync and remove a small probe file in ``folder``: a read-only, full or forbidden
    folder raises its ``OSError`` here, before any work, instead of after every input's work."""
    handle, name = tempfile.mkstemp(dir=folder, prefix=".probe.", suffix=".tmp")
    try:
        os.write(handle, bytes(4096))
        os.fsync(handle)
    finally:
        os.close(handle)
        os.unlink(name)


STORAGE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)
# numpy reports a short write (a full disk) without an errno: "16384 requested and 2016 written".
_SHORT_WRITE = re.compile(r"\d+ requested and \d+ written")


def storage_fault(error: OSError) -> str | None:
    """What ``error``, raised while writing, says about the storage when the storage itself is at fault
    (``"no space left on device"``, ``"disk quota exceeded"``, ``"read-only file system"``): no later
    write there can succeed. ``None`` for anything else (e.g. an image encoder's error)."""
    if error.errno in STORAGE_ERRNOS:
        return os.strerror(error.errno).lower()
    if error.errno is None and _SHORT_WRITE.fullmatch(str(error)):
        return os.strerror(errno.ENOSPC).lower()
    return None


class FolderInUseError(BlockingIOError):
    """Another process holds the folder's lock; ``holder`` is what it wrote about itself."""

    def __init__(self, folder: str | os.PathLike[str], holder: dict[str, Any]) -> None:
        super().__init__(errno.EWOULDBLOCK, "folder in use", os.fspath(folder))
        self.folder, self.holder = os.fspath(folder), holder

    def __str__(self) -> str:
        if not self.holder:
            return f"{self.folder} is in use by another run (it has not written who it is yet)"
        who = f"pid {self.holder.get('pid')} on {self.holder.get('host')} since {self.holder.get('since')}"
        return f"{self.folder} is in use by another run ({who}): {self.holder.get('command')}"


@contextmanager
def folder_lock(folder: str | os.PathLike[str], name: str = ".lock") -> Iterator[Path]:
    """Hold the exclusive lock ``folder/name`` for the block; while it is held, another process (or
    another call in this one) gets :class:`FolderInUseError` naming the holder.

    The lock is the kernel's (``flock``): it ends with its process, so the lock of a killed run is
    free at once and the next run takes it over. The file holds the holder's pid, host, command and
    start time, and is removed when the block ends.
    """
    import fcntl  # POSIX only, and only needed here: the atomic writes above work everywhere

    path = Path(folder) / name
    while True:
        handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(handle)
            os.close(handle)
            raise FolderInUseError(folder, holder) from None
        except BaseException:
            os.close(handle)
            raise
        if _is_open_at(handle, path):
            break
        os.close(handle)  # the holder removed the file as it let go: lock the file now at this path
    try:
        holder = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "command": shlex.join([sys.executable, *sys.argv]),
        }
        os.ftruncate(handle, 0)
        os.write(handle, json.dumps(holder).encode() + b"\n")
        yield path
    finally:
        path.unlink(missing_ok=True)  # still locked: a process that opened this file sees it removed
        os.close(handle)


def _read_holder(handle: int) -> dict[str, Any]:
    try:
        holder = json.loads(os.pread(handle, 65536, 0) or b"{}")
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


def _is_open_at(handle: int, path: Path) -> bool:
    try:
        found = os.stat(path)
    except FileNotFoundError:
        return False
    opened = os.fstat(handle)
    return (found.st_dev, found.st_ino) == (opened.st_dev, opened.st_ino)
