"""Forward time with and without the pooling head (``output_pooler=True`` vs ``False``).

Patch-feature callers (token features, probe extraction, the LMM tower, the video classifier) skip the head.
Each round times both settings back to back, in alternating order; the figures are medians over the rounds
(wall time, and the process's CPU time, which other work on a shared machine disturbs less), and the ratios are
those of the medians. One thread by default, for steadier figures. Random weights: the time does not depend on
their values.

    python benchmarks/bench_pooling_head.py                            # the tests' tiny encoder, 8 x 224 images
    python benchmarks/bench_pooling_head.py --preset large --layers 24 --frames 1
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from onevision_encoder import OneVisionEncoderConfig, OneVisionEncoderModel

TINY = {"hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 2}


def make_model(preset: str, layers: int | None) -> OneVisionEncoderModel:
    torch.manual_seed(0)
    depth = {} if layers is None else {"num_hidden_layers": layers}
    if preset == "tiny":
        config = OneVisionEncoderConfig(**{**TINY, **depth})
    else:
        config = OneVisionEncoderConfig.from_preset(preset, **depth)
    return OneVisionEncoderModel(config).eval()


def forward_seconds(model: OneVisionEncoderModel, pixels: torch.Tensor, output_pooler: bool) -> tuple[float, float]:
    """Wall and CPU seconds of one forward."""
    wall, cpu = time.perf_counter(), time.process_time()
    with torch.inference_mode():
        model(pixel_values=pixels, output_pooler=output_pooler)
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="tiny", choices=["tiny", "base", "large"])
    parser.add_argument("--layers", type=int, help="encoder blocks (default: the preset's)")
    parser.add_argument("--frames", type=int, default=1, help="224x224 frames per sample (256 tokens each)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if args.rounds < 5:
        parser.error("--rounds must be at least 5")
    torch.set_num_threads(args.threads)
    model = make_model(args.preset, args.layers)
    pixels = torch.randn(args.batch, 3, args.frames, 224, 224, generator=torch.Generator().manual_seed(0))
    config = model.config
    tokens = args.batch * args.frames * 256
    print(
        f"{args.preset}: width {config.hidden_size}, {config.num_hidden_layers} blocks; {tokens} tokens "
        f"({args.batch} x {args.frames} frames of 224x224), float32 on CPU, {torch.get_num_threads()} threads"
    )
    settings = {"with head": True, "without head": False}
    for output_pooler in settings.values():  # warm-up
        forward_seconds(model, pixels, output_pooler)
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in settings}
    for round_number in range(args.rounds):
        order = list(settings) if round_number % 2 == 0 else list(reversed(settings))
        for name in order:
            times[name].append(forward_seconds(model, pixels, settings[name]))
    medians = {
        name: [statistics.median(column) for column in zip(*values, strict=True)] for name, values in times.items()
    }
    for name, (wall, cpu) in medians.items():
        print(f"{name:<13} wall {wall * 1000:9.1f} ms  CPU {cpu * 1000:9.1f} ms (medians of {args.rounds} rounds)")
    for index, kind in enumerate(("wall", "CPU")):
        ratio = medians["without head"][index] / medians["with head"][index]
        print(f"without the head: {ratio:.3f}x the {kind} time ({1 - ratio:.1%} saved)")


if __name__ == "__main__":
    main()
