"""``onevision train``: train or fine-tune the encoder (one process; use torchrun for more)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .options import UsageError, add_command, output_folder


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, type=Path, help="training YAML (see configs/tiny-cpu.yaml)")
    parser.add_argument("--out", required=True, type=output_folder, help="run folder: checkpoints/, final/, logs")
    parser.add_argument("--max-steps", type=int, help="length of the schedule (default: train.max_steps)")
    parser.add_argument("--stop-after", type=int, help="stop after this many steps with a checkpoint")
    parser.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="start again over a run already in --out: first deletes the files it wrote in checkpoints/, final/, "
        "metrics.jsonl and tensorboard/ (as its run-files.json lists them), and is refused if those hold any "
        "other file (other files in --out stay). Without --resume or --overwrite, a --out that holds a run is "
        "refused",
    )


def add_parser(subparsers: Any) -> None:
    parser = add_command(
        subparsers,
        "train",
        "train or fine-tune with cluster discrimination over image, OCR and video heads",
        "Train the encoder with the release's multi-modal recipe on a JSONL manifest or tar shards. One process "
        "here; for several, the same options under torchrun: torchrun --nproc_per_node N -m "
        "onevision_encoder.train ... Checkpoints go to OUT/checkpoints/ (atomic; --resume continues the same run, "
        "on any number of processes); the exported model to OUT/final/.",
        [
            "onevision train --config configs/tiny-cpu.yaml --out runs/tiny",
            "onevision train --config my.yaml --out runs/a --max-steps 10000 --stop-after 500",
            "onevision train --config my.yaml --out runs/a --resume",
            "onevision train --config my.yaml --out runs/a --overwrite    # delete that run, start again",
            "torchrun --nproc_per_node 8 -m onevision_encoder.train --config my.yaml --out runs/a",
        ],
    )
    add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from ..common.distributed import process_group
    from ..training import load_config, train
    from ..training.trainer import PreviousRunError, claim_run_folder

    if args.resume and args.overwrite:
        raise UsageError(
            "--resume and --overwrite exclude each other: --resume continues the run in --out, --overwrite deletes it"
        )
    config = load_config(args.config)  # a bad config fails before --overwrite deletes anything
    with process_group() as (rank, _, _):
        try:  # before any work (data, model); rank 0 decides for every process
            claim_run_folder(args.out, args.resume, args.overwrite)
        except PreviousRunError as error:
            raise UsageError(
                f"{args.out} already holds a training run ({', '.join(error.found)}): add --resume to continue it, "
                "or --overwrite to delete it and start again"
            ) from None
        except (FileExistsError, FileNotFoundError) as error:  # not a run to overwrite; nothing to resume
            raise UsageError(str(error)) from None
        metrics = train(config, args.out, args.max_steps, args.stop_after, args.resume)
    if metrics and rank == 0:
        print(f"step {metrics['step']}: loss {metrics['loss']:.4f} -> {args.out}")
    return 0
