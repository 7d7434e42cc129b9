"""Options and helpers shared by the subcommands."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

# The selection's errors, choices, checks and presets, without importing the codec itself (standard library only).
from ..codec.errors import VideoError
from ..codec.options import (
    ANCHOR_POLICIES,
    FUSIONS,
    MOTION_MODES,
    MV_COMPENSATIONS,
    MV_PRECISIONS,
    RESIDUAL_MODES,
    OptionError,
    SelectionOptions,
)
from ..codec.presets import SELECTION_PRESETS

# What a bad input file raises: reported per file, the batch goes on.
INPUT_ERRORS = (VideoError, OSError, ValueError)

Input = TypeVar("Input", bound="str | os.PathLike[str]")


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


def output_folder(text: str) -> Path:
    """An argparse ``type`` for an output folder, new or existing: a path where a file (or anything but a
    folder) stands is a usage error, exit 2, before any work."""
    problem = not_a_folder(text)
    if problem is not None:
        raise argparse.ArgumentTypeError(problem)
    return Path(text)


def not_a_folder(path: str | os.PathLike[str]) -> str | None:
    """Why ``path`` cannot be an output folder (something other than a folder is in its place), or ``None``."""
    if os.path.lexists(path) and not os.path.isdir(path):
        return f"{path} is a file, not a folder: name a new folder or an existing one"
    return None


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
        "--preset", choices=sorted(SELECTION_PRESETS), default="encoder", help="release geometry (default encoder)"
    )
    group.add_argument("-k", "--num-patches", type=int, help="patches to keep, K")
    group.add_argument("--frames", type=int, default=64, help="frames sampled over the video, T (default 64)")
    add_frame_range(group)
    group.add_argument("--patch-size", type=int, help="patch side in pixels")
    group.add_argument("--size", type=int, help="model input side in pixels")
    group.add_argument("--mv-compensate", choices=MV_COMPENSATIONS, help="camera-motion compensation")
    group.add_argument(
        "--mv-precision",
        choices=MV_PRECISIONS,
        help="motion vectors in whole pixels truncated toward zero (pel, as the release) or quarter-pel (qpel)",
    )
    group.add_argument("--anchors", choices=ANCHOR_POLICIES, help="sampled frames kept whole")
    group.add_argument("--gop-size", type=int, default=16, help="anchor spacing for --anchors gop (default 16)")
    group.add_argument("--motion", choices=MOTION_MODES, default="auto", help="motion source (default auto)")
    group.add_argument("--fusion", choices=FUSIONS, default="weighted", help="how motion and residual combine")
    group.add_argument(
        "--residual", choices=RESIDUAL_MODES, default="abs", help="residual energy: |error| or its gradient magnitude"
    )
    group.add_argument(
        "--allow-truncated",
        action="store_true",
        help="select from the frames a truncated file holds (meta.json says what is missing) instead of failing",
    )


# select_patches keywords whose option is not spelled --<keyword with dashes>.
_FLAGS = {"num_patches": "-k/--num-patches", "num_frames": "--frames"}


def selection_options(args: argparse.Namespace) -> dict[str, Any]:
    """``select_patches`` keywords from parsed options (unset ones fall back to the preset), checked as
    ``select_patches`` checks them: a value it would refuse is a :class:`UsageError` (exit 2) before any video."""
    options = {
        "preset": args.preset,
        "num_patches": args.num_patches,
        "num_frames": args.frames,
        "frame_range": args.frame_range,
        "patch_size": args.patch_size,
        "size": args.size,
        "mv_compensate": args.mv_compensate,
        "mv_precision": args.mv_precision,
        "anchors": args.anchors,
        "gop_size": args.gop_size,
        "motion": args.motion,
        "fusion": args.fusion,
        "residual": args.residual,
        "allow_truncated": args.allow_truncated,
    }
    options = {key: value for key, value in options.items() if value is not None}
    try:
        SelectionOptions.resolve(**options)
    except OptionError as error:
        flag = _FLAGS.get(error.option, "--" + error.option.replace("_", "-"))
        raise UsageError(f"argument {flag}: {error.problem}") from None
    return options


class UsageError(ValueError):
    """A command line that cannot be run as given: exit status 2 (argparse's), before any work."""


def refuse_outputs_over_inputs(
    pairs: Iterable[tuple[str | os.PathLike[str], str | os.PathLike[str]]], *, folders: bool = False
) -> None:
    """Raise :class:`UsageError`, naming both paths, if an output of the ``(input, output)`` pairs would
    write over an input of the same command (the path as given, or where its links lead). With ``folders``
    the outputs are folders that replace whatever stood there, so an input inside one is refused too."""
    pairs = list(pairs)
    inputs: dict[str, str | os.PathLike[str]] = {}
    outputs: dict[str, str | os.PathLike[str]] = {}
    for source, output in pairs:
        for key in _places(source):
            inputs.setdefault(key, source)
        for key in _places(output):
            outputs.setdefault(key, output)
    for key, output in outputs.items():
        if key in inputs:
            raise UsageError(f"the output {output} would overwrite the input {inputs[key]}")
    if folders:
        for key, source in inputs.items():
            child, parent = key, os.path.dirname(key)
            while parent != child:  # up to the root
                if parent in outputs:
                    raise UsageError(f"the output folder {outputs[parent]} would replace the input {source} inside it")
                child, parent = parent, os.path.dirname(parent)


def add_overwrite(parser: argparse.ArgumentParser) -> None:
    """``--overwrite``: replace the selection folders of another input or other options (see
    :mod:`onevision_encoder.codec.selection_folder`)."""
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace output folders this tool made from another input or with other options, or that an earlier "
        "version wrote (never a folder holding files it did not write)",
    )


def selection_folders(
    videos: Sequence[Input], base: str | os.PathLike[str], out: Path, frame_range: tuple[int, int] | None
) -> dict[Input, Path]:
    """Each video's selection folder, ``OUT/<its path relative to base, as given>[@START-END]``
    (:func:`~onevision_encoder.video.media.output_name`, :func:`~onevision_encoder.video.media.with_frame_range`): one
    per input, and per clip of it, whatever other runs wrote there. Two inputs of one folder are a
    :class:`UsageError`: the same file given twice, or a path outside ``base`` (named by its absolute path)
    meeting one inside it."""
    from ..video.media import output_name, with_frame_range

    folders: dict[Input, Path] = {}
    owners: dict[Path, Input] = {}
    for video in videos:
        folder = out / with_frame_range(output_name(video, base), frame_range)
        if folder in owners:
            first = owners[folder]
            if os.path.abspath(first) == os.path.abspath(video):
                raise UsageError(f"an input is given more than once: {first}, {video}")
            raise UsageError(f"{first} and {video} would both be written to {folder}")
        folders[video], owners[folder] = folder, video
    return folders


def refuse_replacing_others(
    outputs: Iterable[str | os.PathLike[str]], written_by_us: Callable[[Path], bool], command: str
) -> None:
    """Raise :class:`UsageError` for the first of ``outputs`` that exists and that ``written_by_us(path)``
    does not recognise as this command's (by the mark it leaves in what it writes): a command replaces
    only its own files, never the user's."""
    for output in outputs:
        if os.path.lexists(output) and not written_by_us(Path(output)):
            raise UsageError(
                f"{output} exists and was not written by onevision {command}: not replacing it (move it, or "
                "choose another --out)"
            )


def _places(path: str | os.PathLike[str]) -> set[str]:
    """The path made absolute as given, and with its links resolved."""
    return {os.path.abspath(path), os.path.realpath(path)}


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
