"""One job per input, in worker processes, so that a failing or crashing input costs only itself.

- Any exception a job raises (ours or a library's) is that input's failure, an :class:`Outcome`
  with the exception's type and message; the run goes on.
- A worker that dies (a crash in a decoder, the out-of-memory killer) breaks its pool. The pool is
  replaced at once and the run keeps its parallelism; the inputs that were in flight in the broken
  pool are retried once, each alone in a fresh process, to tell the input that kills its process
  from the bystanders: one that kills its process alone fails with ``WorkerCrashed``.
- Workers end with the main process, even when it is killed outright (``PR_SET_PDEATHSIG`` on
  Linux, and a thread watching ``os.getppid()`` elsewhere), so a rerun never races with leftovers.
- Closing the results (an interrupt, or a fault of the output location) stops the workers; a
  worker's unfinished ``atomic_directory`` is removed as it unwinds.

Light on purpose (standard library only): a worker imports this module before its first job.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from multiprocessing.connection import wait as wait_for_ends
from typing import TypeVar

T = TypeVar("T")

DONE, FAILED, FAULT = "done", "failed", "fault"
STOP_GRACE_S = 10.0  # a stopped worker that has not unwound by then is killed
WATCH_PARENT_S = 1.0
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


@dataclass(frozen=True)
class Outcome:
    """What became of one input: ``done``, ``failed`` (``error`` names the exception's type), or
    ``fault``: the output location cannot be written (``message`` says why) and the run must stop."""

    status: str
    error: str = ""
    message: str = ""

    @classmethod
    def failure(cls, error: BaseException) -> Outcome:
        return cls(FAILED, error_name(error), str(error) or repr(error))


def error_name(error: BaseException) -> str:
    """The exception's type, with its package when that is not ours or Python's (``cv2.error``)."""
    kind = type(error)
    package = kind.__module__.split(".")[0]
    return kind.__name__ if package in ("builtins", "onevision_encoder") else f"{package}.{kind.__name__}"


def attempt(job: Callable[[T], Outcome], item: T) -> Outcome:
    """``job(item)``, any exception it raises being the item's failure (interrupts go through)."""
    try:
        return job(item)
    except Exception as error:
        return Outcome.failure(error)


def run_jobs(items: Sequence[T], job: Callable[[T], Outcome], workers: int) -> Iterator[tuple[T, Outcome]]:
    """``(item, outcome)`` for every item, in the order they finish: in this process for one worker,
    else in ``workers`` processes (see :func:`run_in_workers`)."""
    if workers == 1:
        return ((item, attempt(job, item)) for item in items)
    return run_in_workers(items, job, workers)


def run_in_workers(items: Sequence[T], job: Callable[[T], Outcome], workers: int) -> Iterator[tuple[T, Outcome]]:
    """``(item, outcome)`` for every item as ``workers`` processes finish them. ``job`` and the items
    must pickle (a module-level function, or a ``functools.partial`` of one). Iterate it from the main
    thread (the workers' end-with-parent signal follows the thread that started them); closing it
    before the end, or an interrupt while it waits, stops the workers."""
    start = functools.partial(
        ProcessPoolExecutor,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_start_worker,
        initargs=(os.getpid(),),
    )
    waiting, suspects = deque(items), deque[T]()
    pool = start(workers)
    shared: dict[Future[Outcome], T] = {}  # in flight in the pool
    alone: dict[Future[Outcome], tuple[T, ProcessPoolExecutor, list[multiprocessing.Process]]] = {}
    finished_all = False
    try:
        while waiting or suspects or shared or alone:
            while suspects and len(shared) + len(alone) < workers:
                item, single = suspects.popleft(), start(1)
                future = single.submit(_attempt_in_worker, job, item)
                alone[future] = (item, single, _processes(single))
            while waiting and len(shared) + len(alone) < workers:
                try:
                    future = pool.submit(_attempt_in_worker, job, waiting[0])
                except (BrokenProcessPool, OSError) as error:
                    # A worker died since the last wait: its futures, below, say which. (If its manager thread
                    # found the death between submit's check and its wake-up call, the closed wake-up pipe
                    # raises OSError "handle is closed" instead.)
                    if shared:
                        break
                    if not isinstance(error, BrokenProcessPool):
                        raise
                    _stop(pool)  # no future of this pool left to tell it: replace it now
                    pool = start(workers)
                    continue
                shared[future] = waiting.popleft()
            finished, _ = wait([*shared, *alone], return_when=FIRST_COMPLETED)
            broken = False
            for future in finished:
                if future in alone:
                    item, single, processes = alone.pop(future)
                    single.shutdown(wait=True)
                    yield item, _outcome(future, processes)
                elif isinstance(future.exception(), BrokenProcessPool):
                    broken = True
                else:
                    yield shared.pop(future), _outcome(future, [])
            if broken:
                in_flight, shared = shared, {}
                retried = 0
                for future, item in in_flight.items():
                    if future.done() and not isinstance(future.exception(), BrokenProcessPool):
                        yield item, _outcome(future, [])
                    else:
                        suspects.append(item)
                        retried += 1
                _stop(pool)
                pool = start(workers)
                print(
                    f"a worker process died; the inputs in flight ({retried}) are retried, each alone in a "
                    f"process of its own, and the others go on in {workers} new workers",
                    file=sys.stderr,
                )
        finished_all = True
    finally:
        if finished_all:
            pool.shutdown(wait=True)
        else:
            for _, single, _ in alone.values():
                _stop(single)
            _stop(pool)


def _outcome(future: Future[Outcome], processes: list[multiprocessing.Process]) -> Outcome:
    try:
        return future.result()
    except BrokenProcessPool:  # only for a pool of its own (see run_in_workers)
        how = next((_death(p.exitcode) for p in processes if p.exitcode), "died")
        return Outcome(FAILED, "WorkerCrashed", f"its worker process {how} while processing it alone")
    except Exception as error:  # e.g. an outcome that does not pickle
        return Outcome.failure(error)


def _death(exitcode: int) -> str:
    if exitcode < 0:
        try:
            return f"was killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"was killed by signal {-exitcode}"
    return f"exited with status {exitcode}"


def _processes(pool: ProcessPoolExecutor) -> list[multiprocessing.Process]:
    # The pool's worker processes; no public accessor before Python 3.14's terminate_workers().
    return list((getattr(pool, "_processes", None) or {}).values())


def _stop(pool: ProcessPoolExecutor) -> None:
    """Stop the pool's workers: SIGTERM (they unwind and exit), SIGKILL for those still running after
    a grace. Only signalled, never reaped here: the pool's own thread reaps them."""
    running = [process for process in _processes(pool) if not wait_for_ends([process.sentinel], 0)]
    for process in running:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    for process in running:
        if not wait_for_ends([process.sentinel], max(0.0, deadline - time.monotonic())):
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGKILL)
    pool.shutdown(wait=True, cancel_futures=True)


def _attempt_in_worker(job: Callable[[T], Outcome], item: T) -> Outcome:
    try:
        return attempt(job, item)
    except BaseException:  # SIGTERM from the main process stopping the run; the with-blocks have unwound
        os._exit(143)  # the pool would hand this worker its next input otherwise


def _start_worker(parent: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the main process stops us
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    if sys.platform.startswith("linux"):  # the kernel kills us when the main process dies, however it dies
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    if os.getppid() != parent:  # it died before prctl
        os._exit(143)
    threading.Thread(target=_watch_parent, args=(parent,), name="watch-parent", daemon=True).start()


def _exit_on_sigterm(signum: int, frame: object) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # once: a second one must not cut the unwinding short
    raise SystemExit(143)


def _watch_parent(parent: int) -> None:
    """Where there is no PR_SET_PDEATHSIG: a worker whose parent is gone is adopted by another process."""
    while os.getppid() == parent:
        time.sleep(WATCH_PARENT_S)
    os._exit(143)
