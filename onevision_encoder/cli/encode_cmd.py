"""``onevision encode``: features for images and videos, in batches, into one file."""

from __future__ import annotations

import argparse
import io
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..media import MEDIA_PATTERNS, list_inputs, output_name
from .options import (
    INPUT_ERRORS,
    UsageError,
    add_command,
    add_frame_range,
    at_least,
    names_of_inputs,
    refuse_outputs_over_inputs,
    report_failure,
)

if TYPE_CHECKING:
    from ..features import EncoderInput
    from ..model import OneVisionEncoderImageProcessor

OUTPUT_SUFFIXES = (".safetensors", ".npz")


def add_parser(subparsers: Any) -> None:
    parser = add_command(
        subparsers,
        "encode",
        "encode images and videos into features",
        "Encode each input and write, per input NAME, the arrays NAME.features ([tokens, D], or [D] "
        "with --pooled), NAME.positions_thw ([tokens, 3] rotary positions) and, for videos, NAME.frame_ids (the "
        "source frames used) into one .safetensors or .npz file. An input may be a folder: its images and videos "
        "(recursively), each NAME then being its path inside the folder; a file given directly is named by its "
        "file name (its path from the inputs' common folder when file names repeat), as given, links not "
        "followed. Modes: image (448 crop), chunk (--frames uniformly sampled frames on the 64-frame grid), "
        "codec (-k codec-selected patches of 64 frames); auto picks image for picture files and codec for videos.",
        [
            "onevision encode photo.jpg clip.mp4 --model lmms-lab-encoder/onevision-encoder-large "
            "--out feats.safetensors",
            "onevision encode videos/ --model ./checkpoint --mode chunk --frames 16 --pooled --out pooled.npz",
            "onevision encode clip.mp4 --model ./checkpoint --mode codec -k 4096 --layer -2 --device cuda "
            "--dtype bfloat16 --out tower.safetensors",
        ],
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image or video files, or folders of them")
    parser.add_argument("--model", required=True, help="checkpoint folder or hub id")
    parser.add_argument("--mode", choices=("auto", "image", "chunk", "codec"), default="auto")
    parser.add_argument("--frames", type=int, choices=(8, 16), default=8, help="frames of a chunk (default 8)")
    parser.add_argument("-k", "--num-patches", type=int, default=2048, help="codec patches (default 2048)")
    add_frame_range(parser)
    parser.add_argument("--layer", type=int, help="hidden state to save (e.g. -2 for LMM towers); default last")
    parser.add_argument("--pooled", action="store_true", help="save the pooled feature per input")
    parser.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    parser.add_argument("--batch-size", type=at_least(1), default=8, help="inputs per forward pass (default 8)")
    parser.add_argument("--out", required=True, type=Path, help="output .safetensors or .npz file")


def named_inputs(inputs: list[str]) -> dict[str, str]:
    """Every input file with its output name, in the order given: a folder's media files (recursively,
    sorted) named by their path inside it, files given directly by :func:`names_of_inputs`. A file given
    twice, two inputs of one name, or a folder without media are usage errors."""
    direct = names_of_inputs([path for path in inputs if not Path(path).is_dir()])
    named: list[tuple[str, str]] = []
    for given in inputs:
        if not Path(given).is_dir():
            named.append((str(given), direct[str(given)]))
            continue
        listing = list_inputs(given, MEDIA_PATTERNS)
        if not listing.files:
            raise UsageError(f"{given}: the folder holds no image or video")
        named.extend((str(path), output_name(path, listing.base)) for path in listing.files)
    paths: dict[str, str] = {}
    owners: dict[str, str] = {}
    for path, name in named:
        if os.path.abspath(path) in paths:
            raise UsageError(f"an input is given more than once: {paths[os.path.abspath(path)]} and {path}")
        if name in owners:
            raise UsageError(f"{owners[name]} and {path} would both be saved as {name}: encode them separately")
        paths[os.path.abspath(path)] = owners[name] = path
    return dict(named)


def prepare(path: str, mode: str, args: argparse.Namespace, processor: OneVisionEncoderImageProcessor, name: str):
    from ..features import chunk_input, codec_input, guess_mode, image_input

    mode = guess_mode(path) if mode == "auto" else mode
    if mode == "image":
        return image_input(path, processor, name)
    if mode == "chunk":
        return chunk_input(path, args.frames, processor, name=name, frame_range=args.frame_range)
    return codec_input(path, args.num_patches, processor.patch_size, name=name, frame_range=args.frame_range)


def run(args: argparse.Namespace) -> int:
    if args.out.suffix not in OUTPUT_SUFFIXES:
        raise UsageError(f"{args.out}: the output must end in {' or '.join(OUTPUT_SUFFIXES)}")
    names = named_inputs(args.inputs)
    refuse_outputs_over_inputs((path, args.out) for path in names)

    import numpy as np
    import torch
    from safetensors.numpy import save as save_safetensors
    from tqdm import tqdm

    from ..features import encode_batch
    from ..files import atomic_write
    from ..model import OneVisionEncoderImageProcessor, OneVisionEncoderModel

    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    model = OneVisionEncoderModel.from_pretrained(args.model, dtype=getattr(torch, args.dtype)).to(device).eval()
    processor = OneVisionEncoderImageProcessor(patch_size=model.config.patch_size)
    arrays: dict[str, np.ndarray] = {}
    pending: list[EncoderInput] = []
    failed = 0

    def flush() -> None:
        for sample, features in zip(pending, encode_batch(model, pending, args.layer, args.pooled), strict=True):
            arrays[f"{sample.name}.features"] = features
            arrays[f"{sample.name}.positions_thw"] = sample.positions_thw.astype(np.int32)
            if sample.frame_ids is not None:
                arrays[f"{sample.name}.frame_ids"] = sample.frame_ids.astype(np.int32)
        pending.clear()

    for path, name in tqdm(names.items(), desc="encode", unit="input", disable=None):
        try:
            sample = prepare(path, args.mode, args, processor, name)
        except INPUT_ERRORS as error:
            report_failure(path, error)
            failed += 1
            continue
        if pending and (sample.batch_key() != pending[0].batch_key() or len(pending) == args.batch_size):
            flush()
        pending.append(sample)
    if pending:
        flush()
    if not arrays:
        raise ValueError("no input could be encoded")
    meta = {"model": args.model, "mode": args.mode, "layer": args.layer, "pooled": args.pooled, "dtype": args.dtype}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.out.suffix == ".safetensors":
        atomic_write(args.out, save_safetensors(arrays, metadata={"onevision": json.dumps(meta)}))
    else:
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        atomic_write(args.out, buffer.getvalue())
    encoded = len(names) - failed
    print(f"{encoded} encoded, {failed} failed -> {args.out}")
    return 1 if failed else 0
