"""Progress of batch jobs: a bar on a terminal, plain lines everywhere else.

tqdm draws nothing when stderr is not a terminal (a CI log, ``nohup``, a Slurm or Ray job's output file),
so a long run said nothing until its summary. There each report is one line, at most every
``interval`` seconds and once at the end: ``encode 0/1: 120/1000 inputs (12%), 3.40 inputs/s, ETA 4m19s``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

# Seconds between two progress lines in a log: often enough to see a run move, rarely enough to read the log.
LOG_INTERVAL_S = 30.0


class ProgressLines:
    """tqdm's ``update``/``write``/``close`` (and context manager), reporting as plain lines on ``stream``:
    ``done/total``, the share done, the rate since the start and the time left at that rate. A line is
    printed when ``interval`` seconds of ``clock`` have passed since the last one, and at ``close``."""

    def __init__(
        self,
        total: int,
        description: str,
        unit: str = "item",
        stream: TextIO | None = None,
        interval: float = LOG_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total, self.description, self.unit = total, description, unit
        self.stream = sys.stderr if stream is None else stream
        self.interval, self.clock = interval, clock
        self.done = 0
        self.started = self.last = clock()
        self.closed = False

    def update(self, count: int = 1) -> None:
        self.done += count
        now = self.clock()
        if now - self.last >= self.interval:
            self.last = now
            self.write(self.line(now))

    def line(self, now: float) -> str:
        """The report at time ``now``."""
        line = f"{self.description}: {self.done}/{self.total} {self.unit}s"
        if self.total:
            line += f" ({100 * self.done // self.total}%)"
        seconds = now - self.started
        if self.done and seconds > 0:
            rate = self.done / seconds
            line += f", {rate:.2f} {self.unit}s/s"
            if self.done < self.total:
                line += f", ETA {_duration((self.total - self.done) / rate)}"
        return line + (f", {_duration(seconds)}" if self.done >= self.total else "")

    def write(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def close(self) -> None:
        if not self.closed and self.total:
            self.write(self.line(self.clock()))
        self.closed = True

    def __enter__(self) -> ProgressLines:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def report_progress(
    total: int,
    description: str,
    unit: str = "item",
    *,
    enabled: bool = True,
    stream: TextIO | None = None,
    interval: float = LOG_INTERVAL_S,
) -> Any:
    """A tqdm bar when ``stream`` (default stderr) is a terminal, else :class:`ProgressLines`; nothing at all
    (a disabled bar) when not ``enabled`` (e.g. on processes other than rank 0)."""
    from tqdm import tqdm

    stream = sys.stderr if stream is None else stream
    if not enabled:
        return tqdm(total=total, disable=True)
    if stream.isatty():
        return tqdm(total=total, desc=description, unit=unit, file=stream)
    return ProgressLines(total, description, unit, stream, interval)


def _duration(seconds: float) -> str:
    """``42s``, ``4m19s``, ``2h05m``."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
