"""Cost of selecting from part of a long video: decoding only what the sampled frames need.

1. A 10 s clip at the end of a 10-minute 720p video (``frame_range``) against the same 10 s as a file of its
   own (its packets copied out, so the frames are the same ones).
2. 64 frames sampled from the whole video (2-second GOP) against a plain full decode (PyAV,
   ``thread_type="AUTO"``), and against the same selection decoding every frame from the first
   (``VideoReader(seek=False)``: the cost before seeking), whose result must be bitwise the same.

The video is generated once (x264 ultrafast, a panning texture with a moving square, 25 fps, a key frame
every 50 frames, no B frames: about a minute on 2 cores) and cached in ``--cache``; ``--codec`` encodes it
with another encoder instead (MPEG-2 and MPEG-4 Part 2 with B frames, VP8, AV1), with the same GOP. Jobs run
interleaved, once each per round; each figure is the median over ``--rounds`` rounds, and each ratio is taken from the
medians of the same run.

    python benchmarks/bench_seek.py [--minutes 10] [--rounds 5] [--cache DIR] [--codec libx264]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import av
import cv2
import numpy as np

from onevision_encoder.codec import select as select_module
from onevision_encoder.codec import select_patches
from onevision_encoder.codec.reader import VideoReader

FPS, GOP, HEIGHT, WIDTH = 25, 50, 720, 1280
CLIP_SECONDS = 10
ENCODERS = {  # encoder -> (file suffix, its options)
    "libx264": (
        ".mp4",
        {"preset": "ultrafast", "crf": "26", "x264-params": f"keyint={GOP}:min-keyint={GOP}:scenecut=0"},
    ),
    "mpeg2video": (".mp4", {"g": str(GOP), "bf": "2", "b": "6M"}),
    "mpeg4": (".mp4", {"g": str(GOP), "bf": "2", "b": "6M"}),
    "libvpx": (".webm", {"g": str(GOP), "deadline": "realtime", "cpu-used": "8", "b": "4M"}),
    "libsvtav1": (".mkv", {"g": str(GOP), "preset": "12", "svtav1-params": "scd=0"}),
}


def long_video(folder: Path, minutes: float, encoder: str = "libx264") -> Path:
    """The cached test video, made on first use: a panning texture (2 px per frame) and a moving square."""
    suffix, options = ENCODERS[encoder]
    name = "" if encoder == "libx264" else f"-{encoder}"
    path = folder / f"long-{HEIGHT}p-{minutes:g}min-gop{GOP}{name}{suffix}"
    if path.exists():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    period = 4096
    noise = np.random.default_rng(0).random((HEIGHT, period), dtype=np.float32)
    luma = cv2.GaussianBlur(noise, (0, 0), 3)
    luma = ((luma - luma.min()) / np.ptp(luma) * 200 + 28).astype(np.uint8)
    chroma = cv2.resize(luma, (period // 2, HEIGHT // 2))
    y_strip = np.concatenate([luma, luma[:, :WIDTH]], axis=1)
    u_strip = np.concatenate([chroma, chroma[:, : WIDTH // 2]], axis=1)
    planes = np.empty((HEIGHT * 3 // 2, WIDTH), np.uint8)  # yuv420p: Y, then U and V as rows of half-rows
    quarter = HEIGHT // 4
    print(f"generating {path} ({minutes:g} min of {WIDTH}x{HEIGHT}, once) ...", flush=True)
    partial = path.with_suffix(".partial" + suffix)
    with av.open(str(partial), "w") as container:
        stream = container.add_stream(encoder, rate=FPS)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.options = options
        for index in range(round(minutes * 60 * FPS)):
            x = index * 2 % period
            planes[:HEIGHT] = y_strip[:, x : x + WIDTH]
            chroma_rows = u_strip[:, x // 2 : x // 2 + WIDTH // 2].reshape(quarter, WIDTH)
            planes[HEIGHT : HEIGHT + quarter] = chroma_rows
            planes[HEIGHT + quarter :] = 255 - chroma_rows
            left, top = index * 5 % (WIDTH - 96), HEIGHT // 2 - 48
            planes[top : top + 96, left : left + 96] = 235
            frame = av.VideoFrame.from_ndarray(planes, format="yuv420p")
            frame.pts = index
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    partial.rename(path)
    return path


def copy_tail(source: Path, target: Path, first_frame: int) -> Path:
    """The frames from ``first_frame`` (a key frame) on, as a file of their own: packets copied, not re-encoded."""
    if target.exists():
        return target
    with av.open(str(source)) as src, av.open(str(target), "w") as dst:
        stream = dst.add_stream_from_template(src.streams.video[0])
        start = None
        for packet in src.demux(src.streams.video[0]):
            if packet.dts is None:
                continue
            if start is None and packet.pts >= first_frame * packet.duration and packet.is_keyframe:
                start = packet.pts
            if start is not None:
                packet.pts -= start
                packet.dts -= start
                packet.stream = stream
                dst.mux(packet)
    return target


def plain_decode(path: Path) -> None:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for _ in container.decode(stream):
            pass


@contextlib.contextmanager
def without_seeking() -> Iterator[None]:
    original = select_module.VideoReader
    select_module.VideoReader = functools.partial(VideoReader, seek=False)
    try:
        yield
    finally:
        select_module.VideoReader = original


def select_unseeking(path: Path):
    with without_seeking():
        return select_patches(path)


def interleaved(jobs: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    times: dict[str, list[float]] = {name: [] for name in jobs}
    for round_ in range(rounds):
        for name, job in jobs.items():
            start = time.perf_counter()
            job()
            times[name].append(time.perf_counter() - start)
        print(f"  round {round_ + 1}/{rounds}: " + ", ".join(f"{n} {t[-1]:.2f}s" for n, t in times.items()), flush=True)
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "onevision-bench")
    parser.add_argument("--codec", choices=sorted(ENCODERS), default="libx264", help="the encoder of the video")
    args = parser.parse_args()

    video = long_video(args.cache, args.minutes, args.codec)
    with VideoReader(video) as reader:
        frames = reader.info.num_frames
    clip = (frames - CLIP_SECONDS * FPS, frames)
    tail = copy_tail(video, args.cache / f"{video.stem}-last{CLIP_SECONDS}s{video.suffix}", clip[0])

    ours, before = select_patches(video), select_unseeking(video)
    same = np.array_equal(ours.scores, before.scores) and np.array_equal(ours.visible_indices, before.visible_indices)
    print(f"64 sampled frames, seeking vs decoding every frame: bitwise the same selection: {same}")

    jobs = {
        "clip of the long video": lambda: select_patches(video, frame_range=clip),
        "clip as its own file": lambda: select_patches(tail),
        "64 frames, seeking": lambda: select_patches(video),
        "plain full decode": lambda: plain_decode(video),
        "64 frames, every frame decoded": lambda: select_unseeking(video),
    }
    for job in jobs.values():
        job()  # warm up (file cache, libraries)
    medians = interleaved(jobs, args.rounds)
    print(f"\n{video.name}: {frames} frames, median of {args.rounds} interleaved rounds")
    for name, seconds in medians.items():
        print(f"  {name:<32} {seconds * 1000:9.1f} ms")
    print(
        f"  last {CLIP_SECONDS} s, long video / own file:        "
        f"{medians['clip of the long video'] / medians['clip as its own file']:.2f}x   (target <= 1.5x)"
    )
    print(
        f"  64 frames, seeking / plain full decode:    "
        f"{medians['64 frames, seeking'] / medians['plain full decode']:.2f}x   (target <= 0.5x)"
    )
    print(
        f"  64 frames, seeking / every frame decoded:  "
        f"{medians['64 frames, seeking'] / medians['64 frames, every frame decoded']:.2f}x"
    )


if __name__ == "__main__":
    main()
