"""``onevision select``: selection files for each video."""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

from .options import (
    INPUT_ERRORS,
    UsageError,
    add_command,
    add_overwrite,
    add_selection_options,
    output_folder,
    refuse_outputs_over_inputs,
    report_failure,
    selection_folders,
    selection_options,
)


def add_parser(subparsers: Any) -> None:
    parser = add_command(
        subparsers,
        "select",
        "choose the K codec-salient patches of each video and write the selection files",
        "Write each video's selection (visidx.npy or visidx_thw.npy, frame_ids.npy, scores.npy, meta.json) "
        "into OUT/<the video's path as given>/ (relative to the working folder; a path outside it by its "
        "absolute path; links not followed; with --frame-range S:E, OUT/<path>@S-E/) and print a one-line "
        "summary per video. meta.json records the input, the options and the files written: a folder made "
        "from another input or with other options is replaced only with --overwrite, and a folder holding "
        "anything this tool did not write never (exit 2, before any work). Bad videos are reported and "
        "skipped; the exit status is 1 if any failed.",
        [
            "onevision select clip.mp4 --out selections/",
            "onevision select videos/*.mp4 --preset lmm --out lmm/",
            "onevision select clip.mp4 -k 4096 --mv-compensate affine --anchors first --out sel/",
        ],
    )
    parser.add_argument("videos", nargs="+", metavar="VIDEO", help="video files")
    parser.add_argument("--out", required=True, type=output_folder, help="output folder")
    add_overwrite(parser)
    add_selection_options(parser)


def run(args: argparse.Namespace) -> int:
    from ..codec.selection_folder import examine, made_from, recorded_options

    options = selection_options(args)
    folders = selection_folders(args.videos, os.curdir, args.out, args.frame_range)
    refuse_outputs_over_inputs(folders.items(), folders=True)
    recorded = recorded_options(options)
    for video, folder in folders.items():
        found = examine(folder, video, recorded)
        if found.not_ours is not None:
            raise UsageError(found.refusal())
        if found.differences and not args.overwrite:
            raise UsageError(f"{found.made_otherwise()}; add --overwrite to replace it")

    from ..codec import select_patches

    failed = 0
    for video in args.videos:
        start = time.perf_counter()
        try:
            selection = select_patches(video, **options)
            folder = selection.save(folders[video], made_from(video, recorded))
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
