"""``onevision probe``: attentive-probe evaluation of frozen video features."""

from __future__ import annotations

import argparse
import importlib.util
import os
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..codec.options import SelectionOptions
from .options import UsageError, add_command, at_least, output_folder, refuse_outputs_over_inputs

if TYPE_CHECKING:
    import torch

    from ..evaluation import AttentiveProbe, Clip, FeatureSpec
    from ..model import OneVisionEncoderVideoProcessor

REPORT_FILES = ("results.json", "predictions.csv", "curves.png")  # what evaluation.report writes into OUT
# The probe's codec mode selects with the encoder preset (its patch size and 64 frames), K and side its own.
CODEC_EXPORT = SelectionOptions.resolve()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--train", required=True, type=Path, help="training list (.csv, .jsonl) or class folders")
    parser.add_argument("--val", required=True, type=Path, help="validation list or class folders")
    parser.add_argument("--model", required=True, help="checkpoint folder or hub id (any image encoder for baseline)")
    parser.add_argument("--mode", choices=("chunk", "codec", "baseline"), default="chunk")
    parser.add_argument(
        "--out", required=True, type=output_folder, help="folder for results.json, predictions.csv, curves.png"
    )
    parser.add_argument("--frames", type=int, choices=(8, 16), default=8, help="chunk/baseline frames (default 8)")
    parser.add_argument("-k", "--num-patches", type=int, choices=(2048, 4096), default=2048, help="codec patches")
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--epochs", type=at_least(1), default=10)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--batch-size", type=at_least(1), default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32", help="encoder and probe")
    parser.add_argument("--device", default="auto", help="cpu, cuda ... (default: cuda when available)")
    parser.add_argument(
        "--jitter-views",
        type=at_least(0),
        default=0,
        metavar="V",
        help="train on V colour-jittered views of each training clip, the epochs cycling through them "
        "(the release's augmentation, p=0.8; --jitter-views EPOCHS is a fresh jitter every epoch, at V times "
        "the encoding); default 0: the clips as they are",
    )
    parser.add_argument(
        "--clips-per-part",
        type=at_least(1),
        help="clips per feature-cache file, the unit of resuming and of splitting work between processes "
        "(default 64, the feature store's CLIPS_PER_PART)",
    )
    parser.add_argument(
        "--cache",
        type=output_folder,
        help="feature cache folder (default OUT/cache; shared by all processes under torchrun)",
    )
    parser.add_argument(
        "--export",
        type=Path,
        metavar="DIR",
        help="also write the trained probe with its encoder as a OneVisionEncoderForVideoClassification into the "
        "new folder DIR (weights, config with the class names, the video processor that makes the probe's inputs): "
        "AutoModelForVideoClassification.from_pretrained(DIR), pipeline('video-classification', model=DIR); "
        "chunk and codec modes",
    )


def add_parser(subparsers: Any) -> None:
    parser = add_command(
        subparsers,
        "probe",
        "attentive-probe evaluation of frozen features (chunk, codec or a baseline encoder)",
        "Encode every clip once (features cached on disk, keyed by model, mode and parameters), train an "
        "attentive probe on the training features and score every validation clip exactly once per epoch. "
        "Writes OUT/results.json (final_top1, final_top5, best_top1 and best_epoch - the best is chosen on the "
        "validation set and labelled so -, num_val_samples, per-epoch curves), OUT/predictions.csv and "
        "OUT/curves.png. Under torchrun: torchrun --nproc_per_node N -m onevision_encoder.probe ...",
        [
            "onevision probe --train train.csv --val val.csv --model ./ckpt --mode chunk --frames 16 --out probe/",
            "onevision probe --train k400/train --val k400/val --model ./checkpoint --mode codec -k 4096 --out codec/",
            "onevision probe --train t.csv --val v.csv --model google/siglip2-base-patch16-224 --mode baseline "
            "--out siglip/",
            "onevision probe --train t.csv --val v.csv --model ./ckpt --mode codec --out codec/ --export classifier/",
        ],
    )
    add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    import torch

    from ..common.distributed import process_group, resolve_device
    from ..evaluation import read_list

    train_clips, val_clips = read_list(args.train), read_list(args.val)
    inputs = [path for path in (args.train, args.val) if not path.is_dir()]
    inputs += [clip.path for clip in train_clips + val_clips]
    outputs = [args.out, *(args.out / name for name in REPORT_FILES)]
    refuse_outputs_over_inputs((source, output) for source in inputs for output in outputs)
    refuse_overlap(train_clips, val_clips)
    if args.export is not None:
        _check_export(args, inputs)
    with process_group() as (rank, _, _):
        _evaluate(args, rank, torch.device(resolve_device(args.device)), train_clips, val_clips)
    return 0


def refuse_overlap(train_clips: list[Clip], val_clips: list[Clip]) -> None:
    """A :class:`UsageError` when a validation clip shares frames with a training clip: the same file (links
    resolved) and frame ranges that meet (no range: the whole video). A probe scored on clips it was trained
    on measures memory, not the features."""
    trained: dict[str, list[Clip]] = {}
    for clip in train_clips:
        trained.setdefault(os.path.realpath(clip.path), []).append(clip)
    shared = [
        (seen, clip)
        for clip in val_clips
        for seen in trained.get(os.path.realpath(clip.path), [])
        if _meet(seen.frame_range, clip.frame_range)
    ]
    if shared:
        seen, clip = shared[0]
        count = len({id(clip) for _, clip in shared})
        raise UsageError(
            f"--train and --val share {count} clip{'s' if count > 1 else ''} of {len(val_clips)} (e.g. {clip.path}: "
            f"{seen.where} and {clip.where}): validate on clips the probe does not train on"
        )


def _meet(first: tuple[int, int] | None, second: tuple[int, int] | None) -> bool:
    """Whether two frame ranges (``None``: the whole video) share a frame."""
    if first is None or second is None:
        return True
    return first[0] < second[1] and second[0] < first[1]


def _evaluate(
    args: argparse.Namespace, rank: int, device: torch.device, train_clips: list[Clip], val_clips: list[Clip]
) -> None:
    import torch

    from ..evaluation import FeatureSpec, ProbeSettings, cached_features, label_index, train_probe
    from ..evaluation.report import write_report
    from ..jobs.feature_store import CLIPS_PER_PART

    clips_per_part = args.clips_per_part or CLIPS_PER_PART
    names, train_labels, val_labels = label_index(train_clips, val_clips, args.val)
    spec = FeatureSpec(args.model, args.mode, args.frames, args.num_patches, args.resolution, args.dtype)
    cache = args.cache or args.out / "cache"
    train_views = [replace(spec, view=view) for view in range(1, args.jitter_views + 1)] or [spec]
    train = [cached_features(view, train_clips, cache, device, "train", clips_per_part) for view in train_views]
    val_features, val_cached = cached_features(spec, val_clips, cache, device, "val", clips_per_part)
    settings = ProbeSettings(
        epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, bf16=args.dtype == "bfloat16", seed=args.seed
    )
    train_features = [features for features, _ in train]
    labels = torch.tensor(train_labels), torch.tensor(val_labels)
    result = train_probe(train_features, labels[0], val_features, labels[1], len(names), settings, device)
    if rank == 0:
        cached = val_cached and all(was_cached for _, was_cached in train)
        extra = {"spec": asdict(spec), "jitter_views": args.jitter_views, "features_from_cache": cached}
        results = write_report(args.out, result, val_clips, names, val_labels, extra)
        if args.export is not None:
            export_classifier(args.export, spec, result.probe, names, settings.label_smoothing)
        print(
            f"final top-1 {results['final_top1']:.4f}, best top-1 {results['best_top1']:.4f} (epoch "
            f"{results['best_epoch']}, chosen on validation), {results['num_val_samples']} validation clips "
            f"-> {args.out}"
        )


def _check_export(args: argparse.Namespace, inputs: list[Path]) -> None:
    """``--export DIR`` must be a new folder, none of the inputs (model included) nor a folder the run writes."""
    if args.mode == "baseline":
        raise UsageError("argument --export: a baseline encoder's probe cannot be exported (chunk and codec modes)")
    # The exported video processor must give the model the very inputs the probe's features came from.
    if importlib.util.find_spec("torchvision") is None:
        raise UsageError(
            "argument --export: the exported video processor needs torchvision: pip install 'onevision-encoder[video]'"
        )
    model = Path(args.model)
    sources = [*inputs, *([model] if os.path.lexists(model) else [])]
    refuse_outputs_over_inputs(((source, args.export) for source in sources), folders=True)
    if os.path.lexists(args.export):
        raise UsageError(f"argument --export: {args.export} already exists; name a new folder")
    export = os.path.realpath(args.export)
    for folder in (args.out, args.cache or args.out / "cache"):
        if os.path.commonpath([export, os.path.realpath(folder)]) == export:
            raise UsageError(f"argument --export: {args.export} would replace {folder}, which this run writes")


def export_classifier(
    folder: Path, spec: FeatureSpec, probe: AttentiveProbe, names: list[str], label_smoothing: float
) -> None:
    """The encoder of ``spec`` with the trained probe as its head (classes ``names``), saved into the new
    ``folder`` at once, with the video processor that gives it the inputs the probe's features came from."""
    import torch

    from ..common.files import atomic_directory
    from ..model import OneVisionEncoderConfig, OneVisionEncoderForVideoClassification, OneVisionEncoderModel

    encoder = OneVisionEncoderModel.from_pretrained(spec.model, dtype=torch.float32)
    if spec.mode == "codec" and encoder.config.patch_size != CODEC_EXPORT.patch_size:
        raise ValueError(
            f"cannot export: codec sampling selects {CODEC_EXPORT.patch_size}-pixel patches, the model's are "
            f"{encoder.config.patch_size}"
        )
    config = OneVisionEncoderConfig.from_dict(
        {
            **encoder.config.to_dict(),
            "id2label": dict(enumerate(names)),
            "label2id": {name: index for index, name in enumerate(names)},
            "classifier_num_heads": probe.attention.num_heads,
            "classifier_mlp_ratio": probe.mlp[0].out_features // probe.mlp[0].in_features,
            "label_smoothing": label_smoothing,
            "freeze_backbone": True,
            # transformers 5's pipeline passes it to the video processor: the frames the probe's clips had.
            "num_frames": spec.frames if spec.mode == "chunk" else CODEC_EXPORT.num_frames,
        }
    )
    model = OneVisionEncoderForVideoClassification(config)
    # The head is the probe's own module type, so its weights map one to one (probe.<name>).
    model.onevision_encoder.load_state_dict(encoder.state_dict())
    model.probe.load_state_dict(probe.state_dict())
    with atomic_directory(folder) as temporary:
        model.save_pretrained(temporary)
        video_processor(spec, config.patch_size).save_pretrained(temporary)
    print(f"exported the probe as OneVisionEncoderForVideoClassification -> {folder}")


def video_processor(spec: FeatureSpec, patch_size: int) -> OneVisionEncoderVideoProcessor:
    """The video processor that turns a video file into the model inputs the probe's features were made of."""
    from ..model import OneVisionEncoderVideoProcessor

    if spec.mode == "codec":  # the probe's selection: the encoder preset with its K and side
        return OneVisionEncoderVideoProcessor(
            sampling="codec", num_patches=spec.num_patches, selection_size=spec.resolution
        )
    side = spec.resolution
    return OneVisionEncoderVideoProcessor(
        sampling="uniform",
        num_frames=spec.frames,
        frame_rounding="round",  # the probe's clips sit at round(i / (T - 1) * 63) on the virtual grid
        size={"shortest_edge": side},
        crop_size={"height": side, "width": side},
        patch_size=patch_size,
    )
