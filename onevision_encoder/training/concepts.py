"""Concept labels: a teacher embeds every sample of a manifest, k-means over the embeddings gives a
concept bank (the centres), and each sample's labels are its top-k nearest centres by cosine.

Images (``image`` and ``ocr`` heads) are embedded whole. A video is embedded as ``frames`` uniformly
sampled frames, each embedding L2-normalised (and optionally cut to its first ``dim`` values),
concatenated and L2-normalised again, so image and video embeddings live in different spaces: a
manifest mixing them is labelled one group at a time (``heads=``), each with its own concept bank.

The teacher is any transformers vision model (:mod:`..evaluation.teacher`); the clustering is faiss's
(:mod:`.clustering`); the manifest is read and rewritten line by line (:func:`.data.read_records`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..common.files import atomic_write
from ..evaluation.teacher import image_features, load_teacher
from ..video.media import open_image
from .clustering import check_centres, kmeans, nearest_centres, normalise, resolve_top_k
from .data import HEADS, ManifestRecord, read_records, write_manifest

Progress = Callable[[int, int], None]


class _Embedder:
    """Embeds images in batches of ``batch_size``; each vector is handed back with its sample's index."""

    def __init__(self, model: Any, processor: Any, batch_size: int) -> None:
        self.model = model
        self.processor = processor
        self.batch_size = batch_size
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype

    def __call__(self, images: list[np.ndarray]) -> np.ndarray:
        import torch

        vectors = []
        for start in range(0, len(images), self.batch_size):
            pixel_values = self.processor(images=images[start : start + self.batch_size], return_tensors="pt")[
                "pixel_values"
            ]
            batches = [p[None] for p in pixel_values] if isinstance(pixel_values, list) else [pixel_values]
            with torch.inference_mode():
                for batch in batches:  # ragged (native-resolution) images go one at a time
                    features = image_features(self.model, batch.to(self.device, self.dtype))
                    vectors.append(features.float().cpu().numpy())
        return np.concatenate(vectors)


def _load_image(record: ManifestRecord, where: str) -> np.ndarray:
    try:
        return np.asarray(open_image(record.path))
    except ValueError as error:  # names the file; add the manifest line
        raise ValueError(f"{where}: {error}") from None


def _load_frames(record: ManifestRecord, where: str, frames: int) -> list[np.ndarray]:
    from ..codec.errors import VideoError
    from ..codec.frames import read_sampled_frames

    try:
        return [np.ascontiguousarray(f) for f in read_sampled_frames(record.path, frames)[1]]
    except (VideoError, OSError) as error:
        message = str(error)
        if not message.startswith(str(record.path)):
            message = f"{record.path}: {message}"
        raise ValueError(f"{where}: {message}") from None


def select_records(
    records: Sequence[ManifestRecord], manifest: str | os.PathLike[str], heads: Sequence[str] | None = None
) -> list[ManifestRecord]:
    """The records of ``heads`` (all when None); refuses to mix videos with images in one concept bank."""
    if heads is not None:
        unknown = sorted(set(heads) - set(HEADS))
        if unknown:
            raise ValueError(f"unknown heads {unknown}; choose from {HEADS}")
        records = [r for r in records if r.head in heads]
        if not records:
            raise ValueError(f"{manifest}: no sample of head {' or '.join(heads)}")
    kinds = {r.is_video for r in records}
    if len(kinds) > 1:
        raise ValueError(
            f"{manifest}: mixes video samples with image samples, whose embeddings cannot share a concept "
            "bank; label one group at a time: the video head, then the image and ocr heads"
        )
    return list(records)


def _combine(vectors: np.ndarray, dim: int | None) -> np.ndarray:
    """Frame embeddings ``[F, D]`` -> one unit vector: normalise each, cut to ``dim``, concatenate, normalise."""
    vectors = normalise(vectors)
    if dim is not None:
        if dim > vectors.shape[1]:
            raise ValueError(f"cannot keep the first {dim} values of the teacher's {vectors.shape[1]}-dim embeddings")
        vectors = vectors[:, :dim]
    return normalise(vectors.reshape(-1))


def embed_records(
    records: Sequence[ManifestRecord],
    manifest: str | os.PathLike[str],
    model: Any,
    processor: Any,
    batch_size: int = 16,
    frames: int = 8,
    dim: int | None = None,
    progress: Progress | None = None,
) -> np.ndarray:
    """``[N, D]`` float32 unit embeddings of ``records`` with a loaded teacher (see :func:`embed_manifest`)."""
    embed = _Embedder(model, processor, batch_size)
    out: list[np.ndarray] = []
    for group in _batches(records, manifest, batch_size, frames):
        vectors = embed([image for _, images in group for image in images])
        start = 0
        for _, images in group:
            out.append(_combine(vectors[start : start + len(images)], dim))
            start += len(images)
        if progress is not None:
            progress(len(out), len(records))
    return np.stack(out).astype(np.float32)


def _batches(
    records: Sequence[ManifestRecord], manifest: str | os.PathLike[str], batch_size: int, frames: int
) -> Iterator[list[tuple[ManifestRecord, list[np.ndarray]]]]:
    """Samples with their decoded images, grouped so a group holds about ``batch_size`` images."""
    group: list[tuple[ManifestRecord, list[np.ndarray]]] = []
    count = 0
    for record in records:
        where = f"{manifest}:{record.line_no}"
        images = _load_frames(record, where, frames) if record.is_video else [_load_image(record, where)]
        group.append((record, images))
        count += len(images)
        if count >= batch_size:
            yield group
            group, count = [], 0
    if group:
        yield group


def _check_embedding_options(batch_size: int, frames: int, dim: int | None) -> None:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if frames < 1:
        raise ValueError(f"frames must be >= 1, got {frames}")
    if dim is not None and dim < 1:
        raise ValueError(f"dim must be >= 1, got {dim}")


def embed_manifest(
    manifest: str | os.PathLike[str],
    teacher: str | os.PathLike[str],
    device: str = "cpu",
    batch_size: int = 16,
    frames: int = 8,
    dim: int | None = None,
    heads: Sequence[str] | None = None,
    progress: Progress | None = None,
) -> np.ndarray:
    """``[N, D]`` float32 L2-normalised teacher embeddings of the manifest's samples, in line order.

    Images: the teacher's embedding (cut to its first ``dim`` values when given), normalised. Videos:
    ``frames`` uniformly sampled frames, each embedded, normalised and cut to ``dim``, concatenated
    and normalised again (``D = frames * dim``). ``heads`` keeps only samples of those heads.
    ``progress(done, total)`` is called after each batch.
    """
    _check_embedding_options(batch_size, frames, dim)
    records = select_records(read_records(manifest), manifest, heads)
    model, processor = load_teacher(teacher, device)
    return embed_records(records, manifest, model, processor, batch_size, frames, dim, progress)


def default_centres_path(out_manifest: str | os.PathLike[str]) -> Path:
    """``train.jsonl`` -> ``train.centres.npy``, beside the new manifest."""
    return Path(out_manifest).with_suffix(".centres.npy")


def build_concepts(
    manifest: str | os.PathLike[str],
    teacher: str | os.PathLike[str],
    num_centres: int,
    out_manifest: str | os.PathLike[str],
    centres_out: str | os.PathLike[str] | None = None,
    top_k: int | None = None,
    device: str = "cpu",
    batch_size: int = 16,
    frames: int = 8,
    dim: int | None = None,
    iterations: int = 20,
    seed: int = 0,
    heads: Sequence[str] | None = None,
    gpu: bool | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Embed the manifest's samples with ``teacher``, cluster them into ``num_centres`` concepts and write
    a new manifest whose ``labels`` are each sample's ``top_k`` nearest concepts (default
    ``min(clustering.DEFAULT_TOP_K, num_centres)``), plus the centres ``[K, D]`` float32 as ``.npy`` (default
    ``<out_manifest stem>.centres.npy``).

    With ``heads`` only those samples are labelled; other lines are copied with their labels unchanged.
    Both files are written atomically. Returns a summary: counts, sizes, paths and seconds taken.
    """
    start = time.perf_counter()
    _check_embedding_options(batch_size, frames, dim)
    check_centres(num_centres)
    top_k = resolve_top_k(top_k, num_centres)
    all_records = read_records(manifest)
    records = select_records(all_records, manifest, heads)
    check_centres(num_centres, len(records))
    centres_out = default_centres_path(out_manifest) if centres_out is None else Path(centres_out)
    if Path(centres_out).suffix != ".npy":
        raise ValueError(f"the centres file must end in .npy, got {centres_out}")
    model, processor = load_teacher(teacher, device)
    embeddings = embed_records(records, manifest, model, processor, batch_size, frames, dim, progress)
    del model
    centres = kmeans(embeddings, num_centres, iterations=iterations, seed=seed, gpu=gpu)
    ids = nearest_centres(embeddings, centres, top_k)
    atomic_write(centres_out, lambda stream: np.save(stream, centres))
    write_manifest(
        all_records, manifest, out_manifest, {r.line_no: row for r, row in zip(records, ids.tolist(), strict=True)}
    )
    used = np.unique(ids[:, 0]).size
    return {
        "manifest": str(out_manifest),
        "centres_file": str(centres_out),
        "samples": len(records),
        "videos": sum(r.is_video for r in records),
        "images": sum(not r.is_video for r in records),
        "dim": int(embeddings.shape[1]),
        "centres": int(num_centres),
        "top_k": int(top_k),
        "centres_used": int(used),
        "seconds": round(time.perf_counter() - start, 3),
    }
