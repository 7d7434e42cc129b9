"""A mixed batch packed vs padded to the longest sample: time and peak memory.

8 images between 224x224 and 672x448 plus 2 codec clips of K=2048 (mosaics with their indices), at
ViT-L width (2 blocks by default). Times are medians of interleaved runs in one process; peak
memory is measured in a fresh process for each. ``--compile`` also times ``torch.compile`` on a
fixed-shape dense input (the encoder blocks compile without graph breaks).

    python benchmarks/bench_packed.py
    python benchmarks/bench_packed.py --device cuda --dtype bfloat16 --backend flash_attention_2
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

import torch
from memory import peak_rss, reset_peak_rss

from onevision_encoder import OneVisionEncoderConfig, OneVisionEncoderModel

IMAGE_SIZES = [(224, 224), (448, 448), (336, 504), (672, 448), (224, 336), (448, 224), (560, 420), (280, 280)]


def make_model(args: argparse.Namespace) -> OneVisionEncoderModel:
    torch.manual_seed(0)
    config = OneVisionEncoderConfig.from_preset("large", num_hidden_layers=args.layers)
    config._attn_implementation = args.backend
    return OneVisionEncoderModel(config).to(args.device, getattr(torch, args.dtype)).eval()


def make_samples(args: argparse.Namespace) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    dtype = getattr(torch, args.dtype)
    samples = [{"pixel_values": torch.randn(3, h, w, generator=g)} for h, w in IMAGE_SIZES]
    for _ in range(2):
        indices = torch.randperm(64 * 256, generator=g)[:2048].sort().values
        samples.append({"pixel_values": torch.randn(3, 8, 224, 224, generator=g), "visible_indices": indices})
    return [
        {k: (v.to(args.device, dtype) if v.is_floating_point() else v.to(args.device)) for k, v in s.items()}
        for s in samples
    ]


def run(model: OneVisionEncoderModel, samples: list, batching: str) -> torch.Tensor:
    with torch.inference_mode():
        out = model.forward_packed(samples, padded=batching == "padded")
    if out.pooler_output.is_cuda:
        torch.cuda.synchronize()
    return out.pooler_output.float()


def child(args: argparse.Namespace) -> None:
    model, samples = make_model(args), make_samples(args)
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        run(model, samples, args.memory_of)
        peak = torch.cuda.max_memory_allocated() - before
    else:
        before = reset_peak_rss()
        run(model, samples, args.memory_of)
        peak = peak_rss() - before
    print(json.dumps({"peak": peak}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--backend", default="sdpa", choices=["sdpa", "eager", "flash_attention_2"])
    parser.add_argument("--compile", action="store_true", help="also time torch.compile on a dense input")
    parser.add_argument("--memory-of", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_of:
        child(args)
        return
    model, samples = make_model(args), make_samples(args)
    tokens = [
        s["visible_indices"].numel() if "visible_indices" in s else s["pixel_values"][0].numel() // 196 for s in samples
    ]
    print(f"{len(samples)} samples, {sum(tokens)} tokens (longest {max(tokens)}; padded: {len(tokens) * max(tokens)})")
    print(f"ViT-L width, {args.layers} blocks, {args.backend}, {args.dtype} on {args.device}")
    reference = {batching: run(model, samples, batching) for batching in ("packed", "padded")}
    times = {"packed": [], "padded": []}
    for _ in range(args.repeats):
        for batching in times:
            start = time.perf_counter()
            run(model, samples, batching)
            times[batching].append(time.perf_counter() - start)
    peaks = {}
    for batching in times:
        command = [sys.executable, __file__, "--memory-of", batching, "--layers", str(args.layers)]
        command += ["--device", args.device, "--dtype", args.dtype, "--backend", args.backend]
        result = subprocess.run(command, capture_output=True, text=True, check=True)
        peaks[batching] = json.loads(result.stdout.strip().splitlines()[-1])["peak"] / 2**20
    packed, padded = statistics.median(times["packed"]), statistics.median(times["padded"])
    print(f"packed {packed * 1000:8.1f} ms  peak {peaks['packed']:7.0f} MiB  {sum(tokens) / packed:9.0f} tokens/s")
    print(f"padded {padded * 1000:8.1f} ms  peak {peaks['padded']:7.0f} MiB")
    print(f"packed is {padded / packed:.2f}x faster, {peaks['packed'] / peaks['padded']:.2f}x the peak memory; "
          f"pooled outputs differ by {(reference['packed'] - reference['padded']).abs().max():.1e}")  # fmt: skip
    if args.compile:
        dense = torch.randn(2, 3, 448, 448, device=args.device, dtype=getattr(torch, args.dtype))
        with torch.inference_mode():
            eager_model = lambda: model(dense)  # noqa: E731
            compiled = torch.compile(model)
            start = time.perf_counter()
            compiled(dense)
            warm = time.perf_counter() - start
            for name, function in (("eager", eager_model), ("compiled", lambda: compiled(dense))):
                runs = []
                for _ in range(args.repeats):
                    start = time.perf_counter()
                    function()
                    runs.append(time.perf_counter() - start)
                print(f"torch.compile: {name:<8} {statistics.median(runs) * 1000:8.1f} ms (2 x 1024 tokens)")
            print(f"torch.compile: first call (compilation) {warm:.1f} s")


if __name__ == "__main__":
    main()
