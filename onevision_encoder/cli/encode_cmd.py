"""``onevision encode``: features for images and videos, into one file (small jobs) or into a feature
folder written in parts as they finish (datasets: flat memory, resumable, shardable, failures recorded).

The folder's format and reader are the probe cache's (:mod:`..jobs.feature_store`); the run is
:mod:`..jobs.encode`'s, each part the work of :func:`..jobs.features.extract_part`, which any engine can
schedule: one process runs the parts of its shard (``--shard i/n`` or torchrun's ``RANK``/``WORLD_SIZE``)
one after the other, or hands them to ``--workers`` processes or to a Ray cluster (``--engine ray``).
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from ..jobs.encode import OUTPUT_SUFFIXES, encode_file, encode_folder, written_by_encode
from ..jobs.plan import named_inputs
from .engine_options import add_engine_options, engine_from_args, parse_shard, plan_errors_as_usage
from .options import (
    UsageError,
    add_command,
    add_frame_range,
    at_least,
    not_a_folder,
    refuse_outputs_over_inputs,
    refuse_replacing_others,
)


def add_parser(subparsers: Any) -> None:
    parser = add_command(
        subparsers,
        "encode",
        "encode images and videos into features",
        "Encode each input: image or video files, folders (their images and videos, recursively; other files "
        "are skipped) and list files (.txt, .lst or .list: one path per line, relative to the list). "
        "Into a .safetensors or .npz file (small jobs), per input NAME the arrays NAME.features ([tokens, D], or "
        "[D] with --pooled), NAME.positions_thw ([tokens, 3] rotary positions) and, for videos, NAME.frame_ids "
        "(the source frames used). Into a folder (any other --out): a feature folder, index.json (every input "
        "with its part and row) and part-NNNNN.safetensors of --clips-per-part inputs, each written when done; "
        "a rerun resumes at the missing parts, --shard i/n (or torchrun's RANK/WORLD_SIZE) splits the parts "
        "between processes, and inputs that fail are recorded in failures*.jsonl while the run goes on. NAME is "
        "the path inside the folder or list, or the file name of a file given directly (its path from the "
        "inputs' common folder when file names repeat), as given, links not followed. A rerun reuses a part only "
        "when its model (by content), options and inputs (by content) are the same; otherwise it stops, naming "
        "what differs, unless --overwrite. An existing --out file is replaced only if encode wrote it. Modes: "
        "image (448 crop, "
        "or --native resolution; EXIF orientation applied), chunk (--frames uniformly sampled frames on the "
        "64-frame grid), codec (-k codec-selected patches of 64 frames); auto picks image for picture files and "
        "codec for videos.",
        [
            "onevision encode photo.jpg clip.mp4 --model lmms-lab-encoder/onevision-encoder-large "
            "--out feats.safetensors",
            "onevision encode videos/ --model ./checkpoint --mode chunk --frames 16 --pooled --out pooled.npz",
            "onevision encode k400/ --model ./checkpoint --device cuda --dtype bfloat16 --out k400-features/",
            "onevision encode list.txt --model ./checkpoint --out features/ --shard 0/4",
            "torchrun --nproc_per_node 8 -m onevision_encoder encode videos/ --model ./checkpoint --out features/",
            "onevision encode videos/ --model ./ckpt --device cuda --engine ray --ray-address auto --out features/",
            "onevision encode photos/ --model ./checkpoint --mode image --native --out photo-features/",
        ],
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image or video files, folders or list files")
    parser.add_argument("--model", required=True, help="checkpoint folder or hub id")
    parser.add_argument("--mode", choices=("auto", "image", "chunk", "codec"), default="auto")
    parser.add_argument(
        "--native", action="store_true", help="images at their native resolution (aspect kept) instead of the crop"
    )
    parser.add_argument("--frames", type=int, choices=(8, 16), default=8, help="frames of a chunk (default 8)")
    parser.add_argument("-k", "--num-patches", type=int, default=2048, help="codec patches (default 2048)")
    add_frame_range(parser)
    parser.add_argument("--layer", type=int, help="hidden state to save (e.g. -2 for LMM towers); default last")
    parser.add_argument("--pooled", action="store_true", help="save the pooled feature per input")
    parser.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32")
    parser.add_argument(
        "--device",
        default="auto",
        help="cpu, cuda, cuda:1 ... (default: the GPU if any; cuda:LOCAL_RANK under torchrun)",
    )
    parser.add_argument("--batch-size", type=at_least(1), default=8, help="inputs per forward pass (default 8)")
    parser.add_argument(
        "--clips-per-part", type=at_least(1), default=64, help="inputs per part of a feature folder (default 64)"
    )
    parser.add_argument("--shard", help="i/n: encode every n-th part starting at i (default: RANK/WORLD_SIZE)")
    add_engine_options(parser, unit="inputs")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="in a feature folder, encode again the parts made by another model, options, inputs or package "
        "version (a rerun without it stops before any work, naming what differs); other files stay",
    )
    parser.add_argument("--out", required=True, type=Path, help="output .safetensors or .npz file, or folder")


def run(args: argparse.Namespace) -> int:
    single = args.out.suffix in OUTPUT_SUFFIXES
    if not single and args.out.suffix and not args.out.is_dir():
        raise UsageError(
            f"{args.out}: the output must be a {' or '.join(OUTPUT_SUFFIXES)} file, or a folder (a name without "
            "a suffix, or an existing folder)"
        )
    if not single and not_a_folder(args.out):
        raise UsageError(f"argument --out: {not_a_folder(args.out)}")
    if args.native and args.mode not in ("auto", "image"):
        raise UsageError(f"--native is for images: --mode {args.mode} encodes videos")
    if args.dtype == "bfloat16" and args.out.suffix == ".npz":
        raise UsageError("an .npz file cannot hold bfloat16: write .safetensors or a folder, or use --dtype float16")
    shard = parse_shard(args.shard)
    if single and shard.count > 1:
        raise UsageError(f"{shard.count} processes (--shard or WORLD_SIZE) write a feature folder: give --out a folder")
    engine = engine_from_args(args)
    if single and (engine.name != "local" or (engine.workers or 1) > 1):
        raise UsageError("--engine ray and --workers hand out the parts of a feature folder: give --out a folder")
    with plan_errors_as_usage():
        names, ignored = named_inputs(args.inputs)
    refuse_outputs_over_inputs(((path, args.out) for path in [*args.inputs, *names]), folders=not single)
    if single:
        refuse_replacing_others([args.out], written_by_encode, "encode")

    from ..jobs.features import EncodeJob

    job = EncodeJob(  # reads the model's files for its content hash
        out=str(args.out),
        model=args.model,
        inputs=tuple(names.items()),
        mode=args.mode,
        frames=args.frames,
        num_patches=args.num_patches,
        frame_range=args.frame_range,
        layer=args.layer,
        pooled=args.pooled,
        native=args.native,
        dtype=args.dtype,
        rows_per_part=args.clips_per_part,
        device=args.device,
        batch_size=args.batch_size,
    )
    if single:
        return encode_file(job, args.out)
    if engine.name == "ray" and str(job.device).startswith("cuda"):
        engine = dataclasses.replace(engine, gpus=1.0)  # each part's task holds a GPU of the cluster
    with plan_errors_as_usage():
        return encode_folder(job, args.out, shard, ignored, engine, args.overwrite)
