"""Per-input jobs as Ray tasks, with the outcomes of the local engine (:mod:`onevision_encoder.jobs.batch`).

- Ray hands the work out: every input is one task of one CPU, run by whichever worker of the cluster
  is free, so a long input holds up no other. The driver keeps one task per CPU of the cluster
  submitted (Ray's advice for many tasks: its memory stays flat however many inputs there are, and a
  stop has no queue to drain) and yields outcomes as tasks finish.
- Any exception of the job is the input's failure, caught in the worker (:func:`..batch.attempt`).
- A Ray worker runs one task at a time, so a worker that dies (a crash in a decoder, an out-of-memory
  kill, a lost node) takes no bystander with it: Ray retries its task once (``max_retries``), on any
  worker, and a second death is the input's own doing, ``WorkerCrashed``, as in the local engine.
- Tasks run in the driver's working directory, so relative paths mean on every node what they mean
  to the driver: inputs, outputs and that directory must be on a file system every node sees.
- Closing the results (an interrupt, a fault of the output location) submits no more and lets the
  tasks in flight end, for up to a grace: ``ray.cancel`` races with a task's completion and can bring
  the driver down (a failed check in Ray's task manager, seen with Ray 2.60; ray-project/ray#54798
  fixed one path of it). Tasks still running then end with the Ray job when this
  process leaves Ray, as when the driver dies: Ray kills the job's workers, and their unfinished
  folders are removed by the next run (:func:`..files.remove_leftovers`).

Ray itself is imported only when jobs run: ``pip install 'onevision-encoder[ray]'``.
"""

from __future__ import annotations

import importlib.util
import itertools
import logging
import os
import signal
import socket
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from .batch import FAILED, STOP_GRACE_S, Outcome, attempt

T = TypeVar("T")

RETRIES = 1  # a worker that dies again on the same input was killed by that input
CONNECT_TIMEOUT_S = 10.0
INSTALL = "pip install 'onevision-encoder[ray]'"


def ray_installed() -> bool:
    """Whether Ray can be imported (without importing it: that takes seconds)."""
    return importlib.util.find_spec("ray") is not None


def run_on_ray(
    items: Sequence[T],
    job: Callable[[T], Outcome],
    address: str | None = None,
    cpus: int | None = None,
    gpus: float = 0.0,
) -> Iterator[tuple[T, Outcome]]:
    """``(item, outcome)`` for every item as Ray tasks finish them. ``job`` and the items must pickle, and
    the worker nodes must have this package installed. Ray is the one this process already joined, else
    the cluster at ``address`` (``"auto"``: the one running on this machine; ``HOST:PORT``: its head
    node), else a Ray started here for the run, of ``cpus`` CPUs (``None``: all of this machine's). Each
    task holds a CPU and ``gpus`` GPUs, so Ray runs as many at once as the free resources allow."""
    import ray

    started = _join(ray, address, cpus)
    try:
        task = ray.remote(_attempt_in_task).options(
            num_cpus=1, num_gpus=gpus, max_retries=RETRIES, retry_exceptions=False
        )
        shipped, directory = ray.put(job), os.getcwd()
        waiting = iter(items)
        running: dict[Any, T] = {}
        try:
            while True:
                capacity = max(1, int(ray.cluster_resources().get("CPU", 0)))  # nodes come and go
                for item in itertools.islice(waiting, max(0, capacity - len(running))):
                    running[task.remote(shipped, item, directory)] = item
                if not running:
                    return
                finished, _ = ray.wait(list(running), num_returns=1)
                for reference in finished:
                    yield running.pop(reference), _outcome(ray, reference)
        finally:
            if running:
                ray.wait(list(running), num_returns=len(running), timeout=STOP_GRACE_S)
    finally:
        if started:
            ray.shutdown()


def _join(ray: Any, address: str | None, cpus: int | None) -> bool:
    """Connect to Ray (see :func:`run_on_ray`); whether this started it (and so shuts it down)."""
    if ray.is_initialized():
        return False
    # ray.init sets a SIGTERM handler that exits at once; the caller's (a clean stop, with a summary) stays.
    on_sigterm = signal.getsignal(signal.SIGTERM) if threading.current_thread() is threading.main_thread() else None
    if address not in (None, "auto"):  # Ray itself would keep trying an address where nothing answers for minutes
        host, _, port = address.rpartition(":")
        try:
            socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
        except OSError as error:
            raise ConnectionError(f"cannot reach the Ray cluster at {address}: {error}") from None
    local = {"num_cpus": cpus, "include_dashboard": False} if address is None else {}
    try:
        ray.init(address=address or "local", logging_level=logging.WARNING, **local)  # "local": never RAY_ADDRESS
    except ConnectionError as error:
        raise ConnectionError(f"cannot reach the Ray cluster at {address}: {error}") from None
    finally:
        if on_sigterm is not None:
            signal.signal(signal.SIGTERM, on_sigterm)
    return True


def _attempt_in_task(job: Callable[[T], Outcome], item: T, directory: str) -> Outcome:
    here = os.getcwd()
    try:
        os.chdir(directory)
    except OSError as error:  # a node without the shared file system: every input it runs fails saying so
        return Outcome.failure(OSError(f"the driver's working directory is not on {socket.gethostname()}: {error}"))
    try:
        return attempt(job, item)
    finally:
        os.chdir(here)


def _outcome(ray: Any, reference: Any) -> Outcome:
    try:
        return ray.get(reference)
    except (ray.exceptions.WorkerCrashedError, ray.exceptions.OutOfMemoryError, ray.exceptions.NodeDiedError) as error:
        how = str(error).strip().splitlines()[0]
        return Outcome(FAILED, "WorkerCrashed", f"its Ray worker died on each of its {1 + RETRIES} attempts: {how}")
    except ray.exceptions.RayError as error:  # e.g. the job cannot be unpickled on a node without this package
        return Outcome.failure(error)
