"""A dataset job's account: failures as they happen, then its failures and summary files and its exit status."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..common.files import atomic_write, storage_fault

INTERRUPTED = 130  # the exit status of a run stopped by Ctrl-C or SIGTERM, as a shell reports SIGINT


def print_failure(path: str, error: str, message: str) -> None:
    """One line on stderr, ``error: <file>: <problem>`` (a message that starts with the file is the whole line)."""
    print(f"error: {message if message.startswith(path) else f'{path}: {error}: {message}'}", file=sys.stderr)


@contextmanager
def failure_log(path: Path, earlier: list[dict[str, Any]] | None = None) -> Iterator[Callable[..., None]]:
    """Append failure records to ``path`` as they happen, each line handed to the disk at once (one unbuffered
    write and fsync), so that a run killed outright still says what failed. The file starts with the
    ``earlier`` records (by default none: this run retries the earlier failures); the run's summary rewrites
    it when the run ends."""
    handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o666)

    def append(*records: dict[str, Any]) -> None:
        try:
            os.write(handle, "".join(json.dumps(record) + "\n" for record in records).encode())
            os.fsync(handle)
        except OSError as error:
            if storage_fault(error) is None:
                raise  # a full disk is not: the next output's write stops the run, and its summary says so

    try:
        if earlier:
            append(*earlier)
        yield append
    finally:
        os.close(handle)


def write_records(
    failures_file: Path,
    summary_file: Path,
    summary: dict[str, Any],
    failures: list[dict[str, Any]] | None,
    first: Mapping[Path, bytes] | None = None,
) -> None:
    """The ``first`` files, the failures file (unless ``None``: an interrupted run keeps the one it appended),
    then the summary, each atomically."""
    for path, content in (first or {}).items():
        atomic_write(path, content)
    if failures is not None:
        atomic_write(failures_file, "".join(json.dumps(record) + "\n" for record in failures).encode())
    atomic_write(summary_file, json.dumps(summary, indent=1).encode())


def exit_status(interrupted: bool, failed: bool) -> int:
    """130 for an interrupted run, else 1 when anything failed, else 0."""
    if interrupted:
        return INTERRUPTED
    return 1 if failed else 0


def ignored_note(ignored: int, why: str) -> str:
    """The summary line's account of the files that are not inputs (empty when there are none)."""
    return f"; ignored {ignored} other files ({why})" if ignored else ""
