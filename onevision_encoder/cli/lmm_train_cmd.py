"""``onevision lmm-train``: stage-2 training of the LMM probe with transformers' Trainer."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from .options import UsageError, add_command, at_least, output_folder


def add_parser(subparsers: Any) -> None:
    parser = add_command(
        subparsers,
        "lmm-train",
        "train the LMM probe (encoder + projector + language model) on conversations",
        "Fine-tune OneVisionLlavaForConditionalGeneration with transformers' Trainer on LLaVA-style conversations: "
        "the packed videos of `preprocess --preset lmm --pack --conversations`, image and text conversations. The "
        "YAML config names the model (a saved LMM, or an encoder and a causal LM to join), the parts that learn, "
        "the conversation files and the Trainer's settings (docs/lmm.md). OUT gets checkpoint-N/ folders, "
        "metrics.jsonl, skipped.jsonl (items over data.max_length, skipped) and, at the end, final/ (model and "
        "processor). For several GPUs or nodes, the same command "
        "under torchrun (FSDP and DeepSpeed through the trainer section).",
        [
            "onevision lmm-train --config lmm.yaml --out runs/lmm",
            "onevision lmm-train --config lmm.yaml --out runs/lmm --resume    # from the latest checkpoint",
            "onevision lmm-train --config lmm.yaml --out runs/lmm --overwrite # delete that run, start again",
            "torchrun --nproc_per_node 8 -m onevision_encoder lmm-train --config lmm.yaml --out runs/lmm",
        ],
    )
    parser.add_argument("--config", required=True, type=Path, help="the YAML config (model, train, data, trainer)")
    parser.add_argument(
        "--out",
        required=True,
        type=output_folder,
        help="run folder: checkpoint-N/, metrics.jsonl, skipped.jsonl, final/",
    )
    parser.add_argument("--max-steps", type=at_least(1), help="optimizer steps (default: trainer.max_steps or epochs)")
    parser.add_argument("--resume", action="store_true", help="continue from the latest complete checkpoint in OUT")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="start again over a run in OUT: deletes its checkpoint-N/, final/, metrics.jsonl and skipped.jsonl "
        "first (other files stay). Without --resume or --overwrite, an OUT that holds a run is refused",
    )


def run(args: argparse.Namespace) -> int:
    from ..lmm.conversations import ConversationsError
    from ..lmm.training import SKIPPED_FILE, LmmConfigError, RunFolderError, load_lmm_config, train_lmm

    if args.resume and args.overwrite:
        raise UsageError(
            "--resume and --overwrite exclude each other: --resume continues the run in --out, --overwrite deletes it"
        )
    try:
        config = load_lmm_config(args.config, args.max_steps)  # a bad config fails before anything is deleted
    except (OSError, ValueError) as error:
        raise UsageError(str(error)) from None
    try:
        metrics = train_lmm(config, args.out, args.resume, args.overwrite)
    except (LmmConfigError, RunFolderError, ConversationsError) as error:
        raise UsageError(str(error)) from None
    if os.environ.get("RANK", "0") == "0":
        loss = f"loss {metrics['loss']:.4f}" if "loss" in metrics else "no loss logged"
        print(f"step {metrics['step']}: {loss} -> {args.out / 'final'}")
        if metrics["skipped"]:
            print(f"{metrics['skipped']} item(s) skipped, over data.max_length: {args.out / SKIPPED_FILE}")
    return 0
