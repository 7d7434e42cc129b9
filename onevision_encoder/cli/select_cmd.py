"""``onevision select``: selection files for each video."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from .options import (
    INPUT_ERRORS,
    add_command,
    add_selection_options,
    names_of_inputs,
    refuse_outputs_over_inputs,
    report_failure,
    selection_options,
)


def add_parser(subparsers: Any) -> None:
    parser = add_command(
        subparsers,
        "select",
        "choose the K codec-salient patches of each video and write the selection files",
        "Write each video's selection (visidx.npy or visidx_thw.npy, frame_ids.npy, scores.npy, meta.json) "
        "into OUT/<video name>/ (named by the path as given, links not followed; a name that would replace a "
        "video is refused) and print a one-line summary per video. Bad videos are reported and skipped; the "
        "exit status is 1 if any failed.",
        [
            "onevision select clip.mp4 --out selections/",
            "onevision select videos/*.mp4 --preset lmm --out lmm/",
            "onevision select clip.mp4 -k 4096 --mv-compensate affine --anchors first --out sel/",
        ],
    )
    parser.add_argument("videos", nargs="+", metavar="VIDEO", help="video files")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    add_selection_options(parser)


def run(args: argparse.Namespace) -> int:
    options = selection_options(args)
    names = names_of_inputs(args.videos)
    folders = {video: args.out / names[str(video)] for video in args.videos}
    refuse_outputs_over_inputs(folders.items(), folders=True)

    from ..codec import select_patches

    failed = 0
    for video in args.videos:
        start = time.perf_counter()
        try:
            selection = select_patches(video, **options)
            folder = selection.save(folders[video])
        except INPUT_ERRORS as error:
            report_failure(video, error)
            failed += 1
            continue
        print(
            f"{video}: K={selection.num_patches} of {selection.grid[0]}x{selection.grid[1]}x{selection.grid[2]}, "
            f"motion {selection.motion_source}, {time.perf_counter() - start:.2f} s -> {folder}"
        )
    if len(args.videos) > 1:
        print(f"{len(args.videos) - failed} selected, {failed} failed")
    return 1 if failed else 0
