"""Options and helpers shared by the subcommands."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from ..codec.compensation import METHODS
from ..codec.errors import VideoError
from ..codec.saliency import FUSIONS, MOTION_MODES, RESIDUAL_MODES
from ..codec.select import PRESETS
from ..codec.selection import ANCHOR_POLICIES

# What a bad input file raises: reported per file, the batch goes on.
INPUT_ERRORS = (VideoError, OSError, ValueError)


def at_least(minimum: int) -> Any:
    """An argparse ``type`` for integers >= ``minimum`` (a smaller one is a usage error, exit 2)."""

    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    parse.__name__ = "integer"  # argparse names the type in its message
    return parse


def frame_range(text: str) -> tuple[int, int]:
    """``START:END`` frame indices (an argparse ``type``)."""
    start, separator, end = text.partition(":")
    try:
        if not separator:
            raise ValueError
        return int(start), int(end)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected START:END frame indices, got {text!r}") from None


def add_frame_range(parser: Any) -> None:
    """``--frame-range START:END``: work on that clip of each video."""
    parser.add_argument(
        "--frame-range",
        type=frame_range,
        metavar="START:END",
        help="a clip of each video: frame indices START (included) to END (excluded)",
    )


def add_selection_options(parser: argparse.ArgumentParser) -> None:
    """The codec-selection options, named as ``select_patches``'s keywords."""
    group = parser.add_argument_group("selection (defaults come from the preset)")
    group.add_argument(
        "--preset", choices=sorted(PRESETS), default="encoder", help="release geometry (default encoder)"
    )
    group.add_argument("-k", "--num-patches", type=int, help="patches to keep, K")
    group.add_argument("--frames", type=int, default=64, help="frames sampled over the video, T (default 64)")
    add_frame_range(group)
    group.add_argument("--patch-size", type=int, help="patch side in pixels")
    group.add_argument("--size", type=int, help="model input side in pixels")
    group.add_argument("--mv-compensate", choices=METHODS, help="camera-motion compensation")
    group.add_argument("--anchors", choices=ANCHOR_POLICIES, help="sampled frames kept whole")
    group.add_argument("--gop-size", type=int, default=16, help="anchor spacing for --anchors gop (default 16)")
    group.add_argument("--motion", choices=MOTION_MODES, default="auto", help="motion source (default auto)")
    group.add_argument("--fusion", choices=FUSIONS, default="weighted", help="how motion and residual combine")
    group.add_argument(
        "--residual", choices=RESIDUAL_MODES, default="abs", help="residual energy: |error| or its gradient magnitude"
    )


def selection_options(args: argparse.Namespace) -> dict[str, Any]:
    """``select_patches`` keywords from parsed options (unset ones fall back to the preset)."""
    options = {
        "preset": args.preset,
        "num_patches": args.num_patches,
        "num_frames": args.frames,
        "frame_range": args.frame_range,
        "patch_size": args.patch_size,
        "size": args.size,
        "mv_compensate": args.mv_compensate,
        "anchors": args.anchors,
        "gop_size": args.gop_size,
        "motion": args.motion,
        "fusion": args.fusion,
        "residual": args.residual,
    }
    return {key: value for key, value in options.items() if value is not None}


class UsageError(ValueError):
    """A command line that cannot be run as given: exit status 2 (argparse's), before any work."""


def refuse_outputs_over_inputs(pairs: Iterable[tuple[str | os.PathLike[str], str | os.PathLike[str]]]) -> None:
    """Raise :class:`UsageError` if an output ``(input, output)`` pair would write over its input (or
    another input of the same command), links resolved."""
    pairs = list(pairs)
    inputs = {os.path.realpath(source): source for source, _ in pairs}
    for _, output in pairs:
        source = inputs.get(os.path.realpath(output))
        if source is not None:
            raise UsageError(f"the output {output} would overwrite the input {source}")


def report_failure(path: object, error: BaseException) -> None:
    """One line on stderr: ``error: <file>: <problem>`` (video errors already start with the file)."""
    message = str(error)
    if not message.startswith(str(path)):
        message = f"{path}: {message}"
    print(f"error: {message}", file=sys.stderr)


def add_command(
    subparsers: Any, name: str, summary: str, description: str, examples: Sequence[str]
) -> argparse.ArgumentParser:
    """A subcommand parser whose ``--help`` ends with usage examples."""
    return subparsers.add_parser(
        name,
        help=summary,
        description=description,
        epilog="examples:\n" + "\n".join(f"  {line}" for line in examples),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
