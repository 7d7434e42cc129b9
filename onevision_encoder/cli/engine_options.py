"""``--workers``, ``--engine``, ``--ray-address`` and ``--shard``: where a batch command's per-input jobs run;
and the refusals of its plan as usage errors."""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ..jobs.engine import ENGINES, Engine
from ..jobs.plan import PlanError, Shard
from ..jobs.ray_engine import INSTALL, ray_installed
from .options import UsageError, at_least


def add_engine_options(parser: Any, unit: str = "videos") -> None:
    parser.add_argument(
        "--workers",
        type=at_least(1),
        help="worker processes of this machine (default 1); with --engine ray and no --ray-address, the CPUs of "
        "the Ray it starts (default: all of this machine's)",
    )
    parser.add_argument(
        "--engine",
        choices=ENGINES,
        default="local",
        help=f"local: --workers processes here (default); ray: one Ray task per input, handed out to the free "
        f"workers of a Ray cluster, whose nodes must all see the {unit} and OUT at the same paths ({INSTALL})",
    )
    parser.add_argument(
        "--ray-address",
        metavar="auto|HOST:PORT",
        help="with --engine ray: the cluster to join (auto: the one running on this machine, or RAY_ADDRESS); "
        "default: start a Ray on this machine for the run",
    )


def engine_from_args(args: argparse.Namespace) -> Engine:
    """The engine the options name; a usage error for Ray when it is missing, never the local one instead."""
    if args.engine != "ray":
        if args.ray_address:
            raise UsageError("--ray-address goes with --engine ray")
        return Engine("local", args.workers)
    if not ray_installed():
        raise UsageError(f"--engine ray needs Ray, which is not installed: {INSTALL}")
    host, _, port = (args.ray_address or "auto").rpartition(":")
    if args.ray_address not in (None, "auto") and not (host and port.isdigit()):
        raise UsageError(f"--ray-address must be auto or HOST:PORT, got {args.ray_address!r}")
    if args.ray_address and args.workers:
        raise UsageError("--workers sizes the Ray started here; a cluster's (--ray-address) CPUs set its parallelism")
    return Engine("ray", args.workers, args.ray_address)


def parse_shard(text: str | None) -> Shard:
    """``--shard i/n``, or torchrun's ``RANK``/``WORLD_SIZE`` when it is not given."""
    if text is None:
        rank, world = os.environ.get("RANK", "0"), os.environ.get("WORLD_SIZE", "1")
        text = f"{rank}/{world}"
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise UsageError(f"--shard must look like i/n (e.g. 0/4), got {text!r}") from None
    if count < 1 or not 0 <= index < count:
        raise UsageError(f"--shard {text}: need 0 <= i < n")
    return Shard(index, count)


@contextmanager
def plan_errors_as_usage() -> Iterator[None]:
    """A job's :class:`~onevision_encoder.jobs.plan.PlanError` (raised before any work) as a :class:`UsageError`."""
    try:
        yield
    except PlanError as error:
        raise UsageError(str(error)) from None
