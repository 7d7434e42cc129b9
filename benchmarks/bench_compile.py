"""torch.compile (inductor) against eager: forward time at 1024 and 2048 tokens, and the time to compile.

1024 tokens: one 448x448 image. 2048 tokens: a codec mosaic (8 frames of 224x224 holding 2048 patches chosen
from a 64-frame grid, with their ``visible_indices``). Each token count is a fixed bucket compiled on its own
(``dynamic=False``); the first call's time is the compile time. Then eager and compiled calls alternate, and the
medians of ``--rounds`` rounds are compared, all in one process, float32, no gradient.

    python benchmarks/bench_compile.py                     # the base model on CPU
    python benchmarks/bench_compile.py --preset large --device cuda
    python benchmarks/bench_compile.py --plot compile.png  # also draw the measured figures
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from onevision_encoder import OneVisionEncoderConfig, OneVisionEncoderModel


def make_inputs(tokens: int, device: str) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(tokens)
    if tokens == 1024:
        inputs = {"pixel_values": torch.randn(1, 3, 448, 448, generator=generator)}
    elif tokens == 2048:
        indices = torch.randperm(64 * 256, generator=generator)[:2048].sort().values
        inputs = {"pixel_values": torch.randn(1, 3, 8, 224, 224, generator=generator), "visible_indices": indices}
    else:
        raise ValueError(f"no input of {tokens} tokens: choose 1024 or 2048")
    return {name: value.to(device) for name, value in inputs.items()}


def timed(call: Callable[[], torch.Tensor], device: str) -> float:
    start = time.perf_counter()
    call()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="base", choices=["base", "large", "huge"])
    parser.add_argument("--layers", type=int, default=None, help="encoder blocks (default: the preset's)")
    parser.add_argument("--tokens", type=int, nargs="+", default=[1024, 2048])
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds after one warm-up (at least 5)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--plot", type=Path, help="also draw the measured figures into this PNG file")
    args = parser.parse_args()
    if args.rounds < 5:
        parser.error("--rounds must be at least 5")

    overrides = {} if args.layers is None else {"num_hidden_layers": args.layers}
    torch.manual_seed(0)
    model = OneVisionEncoderModel(OneVisionEncoderConfig.from_preset(args.preset, **overrides)).to(args.device).eval()
    config = model.config
    print(
        f"{args.preset}: width {config.hidden_size}, {config.num_hidden_layers} blocks, {args.device}, float32, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    header = ("tokens", "compile s", "eager ms", "compiled ms", "compiled/eager", "max |diff|")
    print(" ".join(f"{title:>{width}}" for title, width in zip(header, (6, 10, 9, 12, 15, 11), strict=True)))
    medians: dict[str, list[float]] = {"eager": [], "compiled": []}
    compile_times: list[float] = []
    with torch.inference_mode():
        for tokens in args.tokens:
            inputs = make_inputs(tokens, args.device)
            compiled = torch.compile(model, fullgraph=True, dynamic=False)
            calls = {
                "eager": lambda inputs=inputs: model(**inputs).last_hidden_state,
                "compiled": lambda inputs=inputs, compiled=compiled: compiled(**inputs).last_hidden_state,
            }
            compile_seconds = timed(calls["compiled"], args.device)
            timed(calls["eager"], args.device)  # warm-up
            timed(calls["compiled"], args.device)
            runs: dict[str, list[float]] = {name: [] for name in calls}
            for _ in range(args.rounds):  # interleaved, so that load on a shared machine hits both alike
                for name, call in calls.items():
                    runs[name].append(timed(call, args.device))
            difference = (calls["compiled"]() - calls["eager"]()).abs().max().item()
            eager_ms, compiled_ms = (statistics.median(runs[name]) * 1000 for name in ("eager", "compiled"))
            medians["eager"].append(eager_ms)
            medians["compiled"].append(compiled_ms)
            compile_times.append(compile_seconds)
            print(
                f"{tokens:>6} {compile_seconds:>10.1f} {eager_ms:>9.0f} {compiled_ms:>12.0f} "
                f"{compiled_ms / eager_ms:>14.2f}x {difference:>11.1e}"
            )
            torch._dynamo.reset()
    if args.plot:
        from plots import Panel, machine, save_bar_chart

        groups = [f"{tokens} tokens" for tokens in args.tokens]
        ratios = [compiled / eager for compiled, eager in zip(medians["compiled"], medians["eager"], strict=True)]
        save_bar_chart(
            args.plot,
            f"torch.compile (inductor, dynamic=False) vs eager: {args.preset}, {config.num_hidden_layers} blocks, "
            f"{args.device} float32, torch {torch.__version__.split('+')[0]}, {torch.get_num_threads()} threads, "
            f"{machine()}",
            [
                Panel(f"forward time (median of {args.rounds})", "ms", groups, medians),
                Panel(
                    "compiled / eager time",
                    "ratio (below 1: compiled faster)",
                    groups,
                    {"compiled / eager": ratios},
                    value_format="{:.2f}x",
                    reference_line=1.0,
                ),
                Panel(
                    "compile time (first call)", "seconds", groups, {"compile": compile_times}, value_format="{:.1f}"
                ),
            ],
        )
        print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
