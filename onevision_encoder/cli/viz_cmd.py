"""``onevision viz``: the selection of a video as pictures."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .options import (
    add_command,
    add_selection_options,
    refuse_outputs_over_inputs,
    refuse_replacing_others,
    selection_options,
)


def add_parser(subparsers: Any) -> None:
    parser = add_command(
        subparsers,
        "viz",
        "draw what the selection keeps: PNG contact sheet plus GIF or MP4",
        "Four aligned panels per sampled frame (original, uniform frame sampling with the same "
        "token budget, saliency heatmap, kept patches with the rest greyed) as a PNG contact sheet with a bar "
        "chart of the patches each frame contributed, and the same panels animated as a GIF or MP4 beside it: "
        "--out clip.png writes clip.png and clip.anim.gif (or clip.anim.mp4). An output that would overwrite "
        "the video is refused, and so is one that exists and that viz did not draw (viz marks its pictures).",
        [
            "onevision viz clip.mp4 --out clip.png",
            "onevision viz clip.mp4 --out clip.png --animation mp4 --preset lmm",
        ],
    )
    parser.add_argument("video", metavar="VIDEO", help="video file")
    parser.add_argument(
        "--out", required=True, type=Path, help="PNG file; the animation goes beside it as STEM.anim.gif or .mp4"
    )
    parser.add_argument("--animation", choices=("gif", "mp4", "none"), default="gif", help="default gif")
    parser.add_argument("--columns", type=int, default=8, help="frames across the contact sheet (default 8)")
    add_selection_options(parser)


def run(args: argparse.Namespace) -> int:
    from ..viz.save import drawn_here, save_visualization, visualization_paths

    outputs = visualization_paths(args.out, args.animation)
    refuse_outputs_over_inputs((args.video, path) for path in outputs.values())
    refuse_replacing_others(outputs.values(), drawn_here, "viz")

    from ..codec import select_patches

    selection = select_patches(args.video, keep_frames=True, **selection_options(args))
    written = save_visualization(selection, args.out, animation=args.animation, columns=args.columns)
    for kind, path in written.items():
        print(f"{kind}: {path}")
    return 0
