"""Forward-pass time and peak memory of the attention backends at ViT-L width.

Token counts: 1024 (a 448x448 image), 2048 and 4096 (codec mosaics of 8 and 16 frames at 224,
passed with their visible indices on the 64-frame grid). Times come from interleaved runs in one
process; peak memory from a fresh process per (backend, tokens), so one cannot inflate another.

    python benchmarks/bench_attention.py                 # CPU, float32, sdpa vs eager
    python benchmarks/bench_attention.py --device cuda --dtype bfloat16 \
        --backends sdpa eager flash_attention_2
    python benchmarks/bench_attention.py --plot attention.png   # also draw the measured figures
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from memory import peak_rss, reset_peak_rss

from onevision_encoder import OneVisionEncoderConfig, OneVisionEncoderModel

TOKENS = {1024: "448 image", 2048: "mosaic, 8 frames", 4096: "mosaic, 16 frames"}


def make_model(layers: int, device: str, dtype: torch.dtype) -> OneVisionEncoderModel:
    torch.manual_seed(0)
    config = OneVisionEncoderConfig.from_preset("large", num_hidden_layers=layers)
    return OneVisionEncoderModel(config).to(device=device, dtype=dtype).eval()


def make_inputs(tokens: int, device: str, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(tokens)
    if tokens == 1024:
        return {"pixel_values": torch.randn(1, 3, 448, 448, generator=generator).to(device, dtype)}
    frames = tokens // 256
    # K sparse patches of the 64-frame grid, re-tiled into `frames` mosaic frames.
    indices = torch.randperm(64 * 256, generator=generator)[:tokens].sort().values
    indices[: 256 * frames // 8] = torch.arange(256 * frames // 8)  # first frame(s) whole, as anchors
    indices = indices.unique()[:tokens]
    assert indices.numel() == tokens
    return {
        "pixel_values": torch.randn(1, 3, frames, 224, 224, generator=generator).to(device, dtype),
        "visible_indices": indices[None].to(device),
    }


def forward(model: OneVisionEncoderModel, backend: str, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    model.config._attn_implementation = backend
    with torch.inference_mode():
        output = model(**inputs).last_hidden_state
    if output.is_cuda:
        torch.cuda.synchronize()
    return output


def measure_memory(args: argparse.Namespace) -> None:
    """Child process: peak memory added by one forward pass, printed as JSON."""
    dtype = getattr(torch, args.dtype)
    model = make_model(args.layers, args.device, dtype)
    inputs = make_inputs(args.memory_of[1], args.device, dtype)
    if args.device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        forward(model, args.memory_of[0], inputs)
        peak = torch.cuda.max_memory_allocated() - before
    else:
        before = reset_peak_rss()
        forward(model, args.memory_of[0], inputs)
        peak = peak_rss() - before
    print(json.dumps({"peak_bytes": peak}))


def peak_memory(args: argparse.Namespace, backend: str, tokens: int) -> float:
    command = [
        sys.executable, __file__, "--memory-of", backend, str(tokens),
        "--layers", str(args.layers), "--device", args.device, "--dtype", args.dtype,
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])["peak_bytes"] / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=2, help="encoder blocks at ViT-L width (default 2)")
    parser.add_argument("--tokens", type=int, nargs="+", default=sorted(TOKENS), choices=sorted(TOKENS))
    parser.add_argument("--backends", nargs="+", default=["sdpa", "eager"])
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds (at least 5)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--plot", type=Path, help="also draw the measured figures into this PNG file")
    parser.add_argument("--memory-of", nargs=2, metavar=("BACKEND", "TOKENS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.repeats < 5:
        parser.error("--repeats must be at least 5: medians of fewer rounds are noise on a shared machine")
    if args.memory_of:
        args.memory_of[1] = int(args.memory_of[1])
        measure_memory(args)
        return

    dtype = getattr(torch, args.dtype)
    model = make_model(args.layers, args.device, dtype)
    baseline = args.backends[0]
    print(f"ViT-L width, {args.layers} layers, {args.dtype} on {args.device}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; median of {args.repeats} interleaved runs")  # fmt: skip
    header = (
        f"{'tokens':>6} {'input':<18} {'backend':<18} {'ms':>9} {'x ' + baseline:>10} {'peak MiB':>9} {'|diff|':>9}"
    )
    print(header)
    print("-" * len(header))
    milliseconds: dict[str, list[float]] = {backend: [] for backend in args.backends}
    mebibytes: dict[str, list[float]] = {backend: [] for backend in args.backends}
    for tokens in args.tokens:
        inputs = make_inputs(tokens, args.device, dtype)
        reference = {b: forward(model, b, inputs).float() for b in args.backends}  # also warms up
        times: dict[str, list[float]] = {b: [] for b in args.backends}
        for _ in range(args.repeats):
            for backend in args.backends:
                start = time.perf_counter()
                forward(model, backend, inputs)
                times[backend].append(time.perf_counter() - start)
        base_time = statistics.median(times[baseline])
        for backend in args.backends:
            median = statistics.median(times[backend])
            diff = (reference[backend] - reference[baseline]).abs().max().item()
            memory = peak_memory(args, backend, tokens)
            milliseconds[backend].append(median * 1000)
            mebibytes[backend].append(memory)
            print(f"{tokens:>6} {TOKENS[tokens]:<18} {backend:<18} {median * 1000:>9.1f} "
                  f"{median / base_time:>10.2f} {memory:>9.0f} {diff:>9.1e}")  # fmt: skip
    if args.plot:
        from plots import Panel, machine, save_bar_chart

        groups = [f"{tokens}\n{TOKENS[tokens]}" for tokens in args.tokens]
        save_bar_chart(
            args.plot,
            f"Attention backends, ViT-L width, {args.layers} blocks, {args.dtype} on {args.device}, "
            f"torch {torch.__version__.split('+')[0]}, {torch.get_num_threads()} threads, {machine()}",
            [
                Panel(f"forward time (median of {args.repeats})", "ms", groups, milliseconds),
                Panel("peak memory of a forward pass", "MiB", groups, mebibytes),
            ],
        )
        print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
