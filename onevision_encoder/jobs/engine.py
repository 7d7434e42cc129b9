"""Where a dataset job's per-input work runs: worker processes of this machine (:mod:`.batch`) or Ray tasks
on a cluster (:mod:`.ray_engine`), with the same outcomes."""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

from .batch import Outcome, run_jobs

T = TypeVar("T")

ENGINES = ("local", "ray")


@dataclass(frozen=True)
class Engine:
    """Where per-input jobs run: ``local``, ``workers`` processes of this machine (default 1); or ``ray``,
    tasks of the Ray cluster at ``address`` (``None``: a Ray started here of ``workers`` CPUs, default all),
    each given a CPU and ``gpus`` GPUs (0: none)."""

    name: str = "local"
    workers: int | None = None
    address: str | None = None
    gpus: float = 0.0

    def run(self, items: Sequence[T], job: Callable[[T], Outcome]) -> Iterator[tuple[T, Outcome]]:
        """``(item, outcome)`` for every item, in the order they finish (see :func:`run_jobs`); closing it
        early stops the work in flight."""
        if self.name == "ray":
            from .ray_engine import run_on_ray

            return run_on_ray(items, job, self.address, self.workers, self.gpus)
        return run_jobs(items, job, self.workers or 1)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


@contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """SIGTERM raises ``KeyboardInterrupt`` in the block: a kill ends the run as cleanly as Ctrl-C."""
    before = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


@contextmanager
def signals_ignored() -> Iterator[None]:
    """SIGINT and SIGTERM are ignored in the block: stopping a run, a second signal must not cut it short."""
    before = {number: signal.signal(number, signal.SIG_IGN) for number in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for number, handler in before.items():
            signal.signal(number, handler)
