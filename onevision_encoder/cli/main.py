"""``onevision`` entry point: subcommands, and errors as one line instead of a traceback."""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Callable, Sequence

from ..common.provenance import package_version
from . import (
    concepts_cmd,
    demo,
    encode_cmd,
    lmm_train_cmd,
    preprocess_cmd,
    probe_cmd,
    select_cmd,
    train_cmd,
    viz_cmd,
)
from .options import UsageError

SUBCOMMANDS = {
    "select": select_cmd,
    "viz": viz_cmd,
    "encode": encode_cmd,
    "preprocess": preprocess_cmd,
    "train": train_cmd,
    "concepts": concepts_cmd,
    "probe": probe_cmd,
    "lmm-train": lmm_train_cmd,
    "demo": demo,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="onevision", description="OneVision Encoder command line tools.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in SUBCOMMANDS.values():
        module.add_parser(subparsers)
    for subparser in subparsers.choices.values():  # `onevision SUB ... --debug` works too
        subparser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return run_command(SUBCOMMANDS[args.command].run, args, f"{parser.prog} {args.command}")


def run_command(run: Callable[[argparse.Namespace], int], args: argparse.Namespace, prog: str) -> int:
    """``run(args)``'s exit status, with errors as one line: 2 for usage errors, 130 for an interrupt,
    1 for anything else (``args.debug`` adds the traceback)."""
    debug = getattr(args, "debug", False)
    try:
        return run(args)
    except UsageError as error:
        if debug:
            traceback.print_exc()
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # one readable line for users; --debug shows where it came from
        if debug:
            traceback.print_exc()
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
