"""What a dataset job is to do, settled before any work: its shard, its inputs' output names, its output folder."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..common.files import check_writable
from ..video.media import MEDIA_PATTERNS, list_inputs, output_name, output_names

LIST_SUFFIXES = (".txt", ".lst", ".list")  # a file given with one of these names its inputs, one per line


class PlanError(ValueError):
    """The job cannot be run as asked (its inputs, or what its output folder already holds): the command
    reports it as a usage error, before any work."""


@dataclass(frozen=True)
class Shard:
    """The ``index``-th of ``count`` processes sharing a job: it takes every ``count``-th item."""

    index: int
    count: int

    @property
    def tag(self) -> str:
        return f"shard{self.index}of{self.count}."

    @property
    def suffix(self) -> str:
        return "" if self.count == 1 else f".shard-{self.index}-of-{self.count}"

    def takes(self, number: int) -> bool:
        """Whether this shard takes the ``number``-th item (counted from 0)."""
        return number % self.count == self.index

    def failures_file(self, out: Path) -> Path:
        return out / f"failures{self.suffix}.jsonl"

    def summary_file(self, out: Path) -> Path:
        return out / f"summary{self.suffix}.json"


def prepare_output(out: Path) -> None:
    """Create OUT and check that it can be written, before any work."""
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"cannot write to {out}: a file is in its place")
    try:
        out.mkdir(parents=True, exist_ok=True)
        check_writable(out)
    except OSError as error:
        raise OSError(f"cannot write to {out}: {error.strerror or error}") from None


def named_inputs(inputs: list[str]) -> tuple[dict[str, str], int]:
    """Every input file with its output name, in the order given, and how many files the folders held
    that are not media (skipped). A folder's media files (recursively, sorted) and a list file's entries
    are named by their path inside it (:func:`..video.media.list_inputs`, as ``preprocess`` lists them),
    files given directly by :func:`..video.media.output_names`. A file given twice, two inputs of one
    name, or a folder without media are a :class:`PlanError`."""
    listed = [path for path in inputs if Path(path).is_dir() or Path(path).suffix.lower() in LIST_SUFFIXES]
    try:
        direct = output_names([path for path in inputs if path not in listed])
    except ValueError as error:
        raise PlanError(str(error)) from None
    named: list[tuple[str, str]] = []
    ignored = 0
    for given in inputs:
        if given not in listed:
            named.append((str(given), direct[str(given)]))
            continue
        try:
            listing = list_inputs(given, MEDIA_PATTERNS)
        except (OSError, ValueError) as error:  # an unreadable or empty list file
            message = str(error)
            raise PlanError(message if message.startswith(str(given)) else f"{given}: {message}") from None
        if not listing.files:
            raise PlanError(f"{given}: the folder holds no image or video")
        named.extend((str(path), output_name(path, listing.base)) for path in listing.files)
        ignored += listing.ignored
    paths: dict[str, str] = {}
    owners: dict[str, str] = {}
    for path, name in named:
        if os.path.abspath(path) in paths:
            raise PlanError(f"an input is given more than once: {paths[os.path.abspath(path)]} and {path}")
        if name in owners:
            raise PlanError(f"{owners[name]} and {path} would both be saved as {name}: encode them separately")
        paths[os.path.abspath(path)] = owners[name] = path
    return dict(named), ignored
