"""Probe results: ``results.json``, ``predictions.csv`` and a picture of the curves."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from ..common.files import atomic_write
from .datasets import Clip
from .probe import ProbeResult

SERIES = (("top1", (64, 200, 190)), ("top5", (250, 190, 60)))


def write_report(
    out: Path,
    result: ProbeResult,
    val: list[Clip],
    class_names: list[str],
    val_labels: list[int],
    extra: dict[str, Any],
) -> dict[str, Any]:
    """Write the three files into ``out`` (atomically) and return the results dictionary."""
    out.mkdir(parents=True, exist_ok=True)
    best = result.best
    results = {
        "final_top1": result.final["top1"],
        "final_top5": result.final["top5"],
        "best_top1": best["top1"],
        "best_epoch": best["epoch"],
        "best_is_a_selection_on_the_validation_set": True,
        "num_val_samples": len(val),
        "epochs": result.curves,
        "classes": class_names,
        **extra,
    }
    atomic_write(out / "results.json", json.dumps(results, indent=1).encode())
    table = io.StringIO()
    writer = csv.writer(table)
    segments = any(clip.frame_range is not None for clip in val)  # clips of longer videos: say which
    writer.writerow(["path", *(["start", "end"] if segments else []), "label", "prediction"])
    for clip, label, prediction in zip(val, val_labels, result.predictions.tolist(), strict=True):
        bounds = list(clip.frame_range or ("", "")) if segments else []
        writer.writerow([str(clip.path), *bounds, class_names[label], class_names[prediction]])
    atomic_write(out / "predictions.csv", table.getvalue().encode())
    image = plot_curves(result.curves)
    atomic_write(out / "curves.png", lambda stream: image.save(stream, format="PNG"))
    return results


def plot_curves(curves: list[dict[str, float]], width: int = 640, height: int = 360) -> Image.Image:
    """Validation top-1 and top-5 per epoch on a 0..1 axis."""
    image = Image.new("RGB", (width, height), (18, 20, 26))
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    left, top, right, bottom = 56, 36, width - 20, height - 40
    draw.text((left, 10), "attentive probe: validation accuracy per epoch (final and best in results.json)", font=font)
    for fraction in (0, 0.25, 0.5, 0.75, 1.0):
        y = bottom - fraction * (bottom - top)
        draw.line([(left, y), (right, y)], fill=(50, 54, 64))
        draw.text((12, y - 6), f"{fraction:.2f}", fill=(170, 170, 180), font=font)
    epochs = [row["epoch"] for row in curves]
    span = max(1, max(epochs) - min(epochs))

    def point(epoch: float, value: float) -> tuple[float, float]:
        return left + (epoch - min(epochs)) / span * (right - left), bottom - value * (bottom - top)

    for index, (key, colour) in enumerate(SERIES):
        points = [point(row["epoch"], row[key]) for row in curves]
        if len(points) > 1:
            draw.line(points, fill=colour, width=3)
        for x, y in points:
            draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour)
        draw.text((right - 120 + index * 60, top - 16), key, fill=colour, font=font)
    for epoch in epochs:
        x, _ = point(epoch, 0)
        draw.text((x - 3, bottom + 6), str(epoch), fill=(170, 170, 180), font=font)
    draw.text(((left + right) // 2 - 16, height - 18), "epoch", fill=(170, 170, 180), font=font)
    return image
