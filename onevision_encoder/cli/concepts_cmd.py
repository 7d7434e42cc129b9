"""``onevision concepts``: concept labels for a training manifest from a teacher model."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from ..video.media import same_file
from .options import UsageError, add_command, at_least, refuse_outputs_over_inputs

HEAD_CHOICES = ("image", "ocr", "video")


def add_parser(subparsers: Any) -> None:
    parser = add_command(
        subparsers,
        "concepts",
        "label a training manifest with its samples' nearest k-means concepts of a teacher's embeddings",
        "Embed every sample of MANIFEST with the teacher (images whole; videos as --frames uniformly sampled "
        "frames, each embedding normalised, cut to --dim values and concatenated), cluster the embeddings into "
        "--centres concepts with spherical k-means (faiss), and write NEW_MANIFEST: the same lines with "
        "'labels' set to each sample's --top-k nearest concepts (other keys kept, paths made relative to the "
        "new manifest's folder), and the centres [K, D] as a .npy file. Videos and images cannot share one "
        "concept bank: label a mixed manifest in two runs with --head.",
        [
            "onevision concepts train.jsonl --teacher facebook/metaclip-b16-fullcc2.5b --centres 2000 "
            "--out train.labelled.jsonl",
            "onevision concepts videos.jsonl --teacher ./metaclip --centres 1000 --dim 512 --out videos.labelled.jsonl",
            "onevision concepts train.jsonl --head image --head ocr --teacher ./metaclip --centres 2000 --out a.jsonl",
        ],
    )
    parser.add_argument("manifest", type=Path, metavar="MANIFEST", help="JSONL training manifest")
    parser.add_argument("--teacher", required=True, metavar="PATH_OR_ID", help="transformers vision model")
    parser.add_argument("--centres", required=True, type=at_least(1), metavar="K", help="number of concepts, K")
    parser.add_argument("--out", required=True, type=Path, metavar="NEW_MANIFEST", help="labelled manifest to write")
    parser.add_argument(
        "--centres-out", type=Path, metavar="FILE.npy", help="centres file (default NEW_MANIFEST's stem + .centres.npy)"
    )
    parser.add_argument(
        "--top-k", type=at_least(1), help="labels per sample, at most K (default 10, or K when it is smaller)"
    )
    parser.add_argument(
        "--head",
        action="append",
        choices=HEAD_CHOICES,
        dest="heads",
        help="label only samples of this head (repeatable; other lines are copied unchanged)",
    )
    group = parser.add_argument_group("embedding")
    group.add_argument("--frames", type=at_least(1), default=8, help="frames sampled per video (default 8)")
    group.add_argument("--dim", type=at_least(1), help="keep the first N values of each frame's embedding")
    group.add_argument("--device", default="auto", help="torch device for the teacher (default auto)")
    group.add_argument("--batch-size", type=at_least(1), default=16, help="images per teacher batch (default 16)")
    group = parser.add_argument_group("k-means")
    group.add_argument("--iterations", type=at_least(1), default=20, help="k-means iterations (default 20)")
    group.add_argument("--seed", type=int, default=0, help="k-means seed (default 0)")


class _Progress:
    """``embedded i/N samples`` on stderr at most every ``interval`` seconds, and at the end."""

    def __init__(self, interval: float = 10.0) -> None:
        self.interval = interval
        self.last = time.monotonic()

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if done == total or now - self.last >= self.interval:
            self.last = now
            print(f"embedded {done}/{total} samples", file=sys.stderr, flush=True)


def check_options(args: argparse.Namespace) -> Path:
    """Refuse, before any work and naming the options, what ``build_concepts`` would refuse, and outputs
    that would overwrite an input (the manifest or a file it names); returns the centres file."""
    from ..training.concepts import default_centres_path
    from ..training.data import read_records

    if args.top_k is not None and args.top_k > args.centres:
        raise UsageError(f"--top-k {args.top_k} is more than --centres {args.centres}")
    centres_out = default_centres_path(args.out) if args.centres_out is None else args.centres_out
    if centres_out.suffix != ".npy":
        raise UsageError(f"--centres-out must end in .npy, got {centres_out}")
    if same_file(args.out, centres_out):
        raise UsageError(f"--out and --centres-out name the same file: {args.out}")
    records = read_records(args.manifest)
    chosen = [r for r in records if args.heads is None or r.head in args.heads]
    if args.heads and not chosen:
        raise UsageError(f"{args.manifest}: no sample of head {' or '.join(args.heads)} (--head)")
    if len({r.is_video for r in chosen}) > 1:
        raise UsageError(
            f"{args.manifest}: mixes video samples with image samples, whose embeddings cannot share a concept "
            "bank: label one group at a time, with --head video, then --head image --head ocr"
        )
    if args.centres > len(chosen):
        raise UsageError(
            f"cannot make {args.centres} centres from {len(chosen)} samples: use --centres {len(chosen)} or fewer"
        )
    inputs = [args.manifest, *(r.path for r in records)]
    refuse_outputs_over_inputs((source, output) for source in inputs for output in (args.out, centres_out))
    return centres_out


def run(args: argparse.Namespace) -> int:
    from ..training.concepts import build_concepts

    centres_out = check_options(args)
    summary = build_concepts(
        args.manifest,
        args.teacher,
        args.centres,
        args.out,
        centres_out=centres_out,
        top_k=args.top_k,
        device=args.device,
        batch_size=args.batch_size,
        frames=args.frames,
        dim=args.dim,
        iterations=args.iterations,
        seed=args.seed,
        heads=args.heads,
        progress=_Progress(),
    )
    print(
        f"{args.manifest}: {summary['samples']} samples ({summary['images']} images, {summary['videos']} videos), "
        f"{summary['dim']}-dim embeddings, {summary['centres']} centres ({summary['centres_used']} used as nearest), "
        f"top-{summary['top_k']} labels, {summary['seconds']:.1f} s -> {summary['manifest']} "
        f"(centres {summary['centres_file']})"
    )
    return 0
