"""``onevision preprocess``: dataset-scale codec selection, parallel, resumable, shardable.

Every input (a video of the folder, or an entry of the list file, named by its path as given: links
are not followed to their targets) gets its own folder ``OUT/<name>[@START-END]/``, written atomically,
whose meta.json records what made it (:mod:`..codec.selection_folder`). A run first checks all it can
before any work (options, the conversations file, outputs over inputs, a writable OUT, no other run on
OUT's shard, and what the folders already there were made from), then processes the videos
(:mod:`..jobs.preprocess`, on an :class:`..jobs.engine.Engine`: worker processes here, or Ray tasks on a
cluster, with the same outputs and records), recording each failure as it happens, and accounts for
every one: done + skipped + failed + remaining = videos, as the folders on disk show.
"""

from __future__ import annotations

import argparse
import functools
from pathlib import Path
from typing import Any

from ..jobs.preprocess import SelectionPlan, packed_conversations, run_preprocess
from ..lmm.conversations import ConversationsError, read_conversations
from ..video.media import VIDEO_PATTERNS, list_inputs
from .engine_options import add_engine_options, engine_from_args, parse_shard, plan_errors_as_usage
from .options import (
    UsageError,
    add_command,
    add_overwrite,
    add_selection_options,
    output_folder,
    refuse_outputs_over_inputs,
    selection_folders,
    selection_options,
)


def add_parser(subparsers: Any) -> None:
    parser = add_command(
        subparsers,
        "preprocess",
        "codec selection for a whole dataset (parallel, resumable, shardable)",
        "Select patches for every video of a folder (recursively; other files are ignored, see --include) "
        "or of a list file (one path per line), into OUT/<path relative to the input, as given>/ (with "
        "--frame-range S:E, <path>@S-E/). Each video's folder appears complete or not at all, and its "
        "meta.json records the input, the options and the files written. A rerun skips the folders made "
        "from the same input with the same options; one made otherwise stops it before any work, unless "
        "--overwrite (which never replaces a folder holding files this tool did not write). Failures are "
        "recorded with their reason in OUT/failures*.jsonl as they happen and the run goes on; a full or "
        "read-only OUT stops it. "
        "One run at a time per OUT and shard (a lock). Shard across machines with --shard i/n or the RANK "
        "and WORLD_SIZE environment, or hand the videos out to a Ray cluster with --engine ray. "
        "With --pack (lmm preset) each video also gets the release's training format: mosaic_0..7 images "
        "(mosaic 0 = the whole first frame) and positions_thw.npy; --conversations rewrites a LLaVA-style "
        "file's <video> into those <image> entries.",
        [
            "onevision preprocess videos/ --out selections/ --workers 2",
            "onevision preprocess list.txt --out sel/ --shard 0/4",
            "onevision preprocess /shared/videos/ --out /shared/sel/ --engine ray --ray-address auto",
            "onevision preprocess videos/ --preset lmm --pack --conversations llava.json --out packed/",
        ],
    )
    parser.add_argument("source", metavar="LIST_OR_FOLDER", type=Path, help="folder of videos, list file, or one video")
    parser.add_argument("--out", required=True, type=output_folder, help="output folder")
    add_overwrite(parser)
    parser.add_argument(
        "--include",
        action="append",
        metavar="GLOB",
        help="take the folder's files whose names match GLOB, case-insensitive (repeatable; default: video "
        "suffixes such as *.mp4); a list file's entries are all taken",
    )
    add_engine_options(parser)
    parser.add_argument("--shard", help="i/n: process every n-th video starting at i (default: RANK/WORLD_SIZE)")
    parser.add_argument("--pack", action="store_true", help="also write mosaics and positions_thw.npy")
    parser.add_argument("--image-format", choices=("jpg", "png"), default="jpg", help="mosaic images (default jpg)")
    parser.add_argument("--conversations", type=Path, help="LLaVA-style JSON/JSONL whose <video> to rewrite")
    add_selection_options(parser)


def run(args: argparse.Namespace) -> int:
    shard = parse_shard(args.shard)
    engine = engine_from_args(args)
    if (args.pack or args.conversations) and args.preset != "lmm":
        raise UsageError("--pack and --conversations produce the LMM training format: use --preset lmm")
    if args.conversations and not args.pack:
        raise UsageError("--conversations rewrites <video> into the packed mosaics: add --pack")
    options = selection_options(args)
    listing = list_inputs(args.source, args.include or VIDEO_PATTERNS)
    try:
        conversations = read_conversations(args.conversations) if args.conversations else None
    except ConversationsError as error:
        raise UsageError(str(error)) from None
    files = [shard.failures_file(args.out), shard.summary_file(args.out)]
    if conversations is not None:
        files.append(args.out / f"conversations.packed{shard.suffix}{conversations.suffix}")
    plan = SelectionPlan(
        shard=shard,
        listing=listing,
        folders=selection_folders(listing.files, listing.base, args.out, args.frame_range),
        out=args.out,
        options=options,
        pack=args.pack,
        image_format=args.image_format,
        ignored_why="not matching --include" if args.include else "not named as videos; see --include",
    )
    sources = [args.source, *([conversations.path] if conversations else [])]
    refuse_outputs_over_inputs([*plan.folders.items(), *((source, file) for source in sources for file in files)])
    finish = None if conversations is None else functools.partial(packed_conversations, conversations, plan, files[-1])
    with plan_errors_as_usage():
        return run_preprocess(plan, engine, args.overwrite, finish)
