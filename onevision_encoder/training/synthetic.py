"""A small synthetic training set with learnable labels (for the tiny CPU config, tests, benchmarks)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from ..common.files import atomic_directory, atomic_write
from ..video.encode import write_video
from ..video.synthetic import texture

# The folder a run's config without data.manifest gets its synthetic set in (OUT/synthetic-data/), and the
# file in it that records the settings it was made with.
SYNTHETIC_FOLDER = "synthetic-data"
SETTINGS_FILE = "synthetic.json"


def _colour(label: int, classes: int) -> tuple[int, int, int]:
    hue = label / classes
    rgb = np.array([abs(hue * 6 - 3) - 1, 2 - abs(hue * 6 - 2), 2 - abs(hue * 6 - 4)]).clip(0, 1)
    return tuple(int(v * 220 + 20) for v in rgb)


def synthetic_image(label: int, classes: int, size: int, seed: int) -> Image.Image:
    """A class-coloured shape (disc or square by class parity) on a random texture."""
    rng = np.random.default_rng(seed)
    image = Image.fromarray(texture(size, size, seed, blur=1.5) // 3)
    draw = ImageDraw.Draw(image)
    radius = size // 4 + int(rng.integers(-size // 16, size // 16 + 1))
    cx, cy = (int(v) for v in rng.integers(radius, size - radius, 2))
    box = (cx - radius, cy - radius, cx + radius, cy + radius)
    (draw.ellipse if label % 2 else draw.rectangle)(box, fill=_colour(label, classes))
    return image


def synthetic_video(label: int, classes: int, size: int, frames: int, seed: int) -> list[np.ndarray]:
    """A class-coloured square moving in a class-dependent direction over a still texture."""
    rng = np.random.default_rng(seed)
    background = texture(size, size, seed, blur=1.5) // 3
    angle = 2 * np.pi * label / classes
    side = size // 4
    start = rng.integers(side, size - 2 * side, 2).astype(float)
    clip = []
    for index in range(frames):
        frame = background.copy()
        x, y = (start + index * 1.5 * np.array([np.cos(angle), np.sin(angle)])) % (size - side)
        frame[int(y) : int(y) + side, int(x) : int(x) + side] = _colour(label, classes)
        clip.append(frame)
    return clip


def make_synthetic_dataset(
    folder: str | Path,
    num_classes: int = 8,
    images: int = 32,
    ocr: int = 0,
    videos: int = 16,
    image_size: int = 64,
    video_size: int = 64,
    video_frames: int = 32,
    seed: int = 0,
) -> Path:
    """Write images, OCR-like images and H.264 videos with class labels, and ``manifest.jsonl``."""
    folder = Path(folder)
    (folder / "media").mkdir(parents=True, exist_ok=True)
    lines = []
    for index in range(images + ocr):
        label = index % num_classes
        head = "image" if index < images else "ocr"
        name = f"media/{head}{index:05d}.png"
        synthetic_image(label, num_classes, image_size, seed * 100003 + index).save(folder / name)
        lines.append({"path": name, "head": head, "labels": [label]})
    for index in range(videos):
        label = index % num_classes
        name = f"media/video{index:05d}.mp4"
        frames = synthetic_video(label, num_classes, video_size, video_frames, seed * 100003 + 50000 + index)
        write_video(folder / name, frames, codec="h264", fps=25, gop=16, crf=20)
        lines.append({"path": name, "head": "video", "labels": [label]})
    manifest = folder / "manifest.jsonl"
    atomic_write(manifest, "".join(json.dumps(line) + "\n" for line in lines).encode())
    return manifest


def synthetic_dataset(folder: str | Path, settings: dict[str, Any]) -> Path:
    """The manifest of the synthetic set ``settings`` (:func:`make_synthetic_dataset`'s keywords) in ``folder``:
    reused when made there with the same settings, else made anew, in one rename (a set made with other
    settings is replaced: it was generated here). A ``folder`` this did not make, or holding a file it did not
    write, is refused."""
    folder = Path(folder)
    recorded, manifest = folder / SETTINGS_FILE, folder / "manifest.jsonl"
    wanted = json.loads(json.dumps(settings))  # as the file holds them (tuples as lists)
    if recorded.is_file():
        if json.loads(recorded.read_text()) == wanted and manifest.is_file():
            return manifest
        written = {SETTINGS_FILE, manifest.name}
        if manifest.is_file():
            written |= {json.loads(line)["path"] for line in manifest.read_text().splitlines()}
        foreign = sorted(
            p for p in folder.rglob("*") if not p.is_dir() and p.relative_to(folder).as_posix() not in written
        )
        if foreign:
            raise FileExistsError(f"{folder} holds {foreign[0]}, which was not generated there: move it out first")
    elif folder.exists():
        raise FileExistsError(f"{folder} exists and holds no synthetic set of ours: move it, or choose another --out")
    with atomic_directory(folder) as temporary:
        make_synthetic_dataset(temporary, **settings)
        atomic_write(temporary / SETTINGS_FILE, json.dumps(wanted, indent=1, sort_keys=True).encode())
    return folder / "manifest.jsonl"
