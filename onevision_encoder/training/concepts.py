"""Concept labels: a teacher embeds every sample of a manifest, k-means over the embeddings gives a
concept bank (the centres), and each sample's labels are its top-k nearest centres by cosine.

Images (``image`` and ``ocr`` heads) are embedded whole. A video is embedded as ``frames`` uniformly
sampled frames, each embedding L2-normalised (and optionally cut to its first ``dim`` values),
concatenated and L2-normalised again, so image and video embeddings live in different spaces: a
manifest mixing them is labelled one group at a time (``heads=``), each with its own concept bank.

The teacher is a local folder or hub id of any transformers vision model; the image embedding is
``get_image_features`` (CLIP-like models), else ``image_embeds``, else ``pooler_output``, else the mean
of ``last_hidden_state``. OneVision Encoder folders work too, with or without a preprocessor config.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..files import atomic_write
from ..media import open_image
from .data import HEADS, manifest_lines

# Keys that hold paths relative to the manifest's folder; rewritten when the new manifest lives elsewhere.
PATH_KEYS = ("path", "selection")
DEFAULT_TOP_K = 10  # labels per sample, or the number of centres when there are fewer

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class ManifestRecord:
    """One manifest line: its number, the JSON object as written, and the media file it names."""

    line_no: int
    data: dict[str, Any]
    path: Path
    head: str

    @property
    def is_video(self) -> bool:
        return self.head == "video"


def read_records(manifest: str | os.PathLike[str], check_files: bool = True) -> list[ManifestRecord]:
    """The samples of a JSONL manifest in order (blank lines skipped); problems raise ``ValueError``
    naming ``manifest:line``."""
    manifest = Path(manifest)
    records = []
    for number, where, data in manifest_lines(manifest):
        path = manifest.parent / data["path"]
        if check_files and not path.is_file():
            raise ValueError(f"{where}: {path}: no such file")
        records.append(ManifestRecord(number, data, path, data.get("head", "image")))
    return records


def load_teacher(teacher: str | os.PathLike[str], device: str = "cpu") -> tuple[Any, Any]:
    """``(model, image_processor)`` of a transformers vision model (folder or hub id), in eval mode."""
    from transformers import AutoConfig, AutoImageProcessor, AutoModel

    import onevision_encoder  # noqa: F401  (registers OneVision Encoder with the Auto classes)
    from onevision_encoder import OneVisionEncoderImageProcessor, OneVisionEncoderModel

    from ..features import resolve_device

    name = os.fspath(teacher)
    try:
        model_class = _projection_class(AutoConfig.from_pretrained(name)) or AutoModel
        model = model_class.from_pretrained(name)
    except (OSError, ValueError) as error:
        raise ValueError(f"teacher {name}: cannot load a model ({error})") from None
    try:
        processor = AutoImageProcessor.from_pretrained(name)
    except (OSError, ValueError) as error:
        if not isinstance(model, OneVisionEncoderModel):
            raise ValueError(f"teacher {name}: cannot load an image processor ({error})") from None
        processor = OneVisionEncoderImageProcessor()
    return model.to(resolve_device(device)).eval(), processor


def _projection_class(config: Any) -> Any:
    """A ``...VisionModelWithProjection`` checkpoint keeps its projection (AutoModel would drop it)."""
    import transformers

    for name in getattr(config, "architectures", None) or []:
        if name.endswith("WithProjection") and "Vision" in name:
            return getattr(transformers, name, None)
    return None


def image_features(model: Any, pixel_values: Any) -> Any:
    """``[B, D]`` float embeddings of a batch of preprocessed images (not yet normalised)."""
    if hasattr(model, "get_image_features"):
        output = model.get_image_features(pixel_values=pixel_values)
    else:
        output = model(pixel_values=pixel_values)
    if not hasattr(output, "keys"):  # a plain tensor (get_image_features in transformers < 5)
        return output.flatten(1)
    for key in ("image_embeds", "pooler_output"):
        value = output.get(key)
        if value is not None:
            return value.flatten(1)
    hidden = output.get("last_hidden_state")
    if hidden is None:
        raise ValueError(f"the teacher {type(model).__name__} gives no image embedding (outputs: {list(output)})")
    return hidden.mean(dim=1) if hidden.ndim == 3 else hidden.flatten(2).mean(dim=2)  # tokens, or conv maps


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
    from ..codec.reader import read_sampled_frames

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


def _normalise(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def _combine(vectors: np.ndarray, dim: int | None) -> np.ndarray:
    """Frame embeddings ``[F, D]`` -> one unit vector: normalise each, cut to ``dim``, concatenate, normalise."""
    vectors = _normalise(vectors)
    if dim is not None:
        if dim > vectors.shape[1]:
            raise ValueError(f"cannot keep the first {dim} values of the teacher's {vectors.shape[1]}-dim embeddings")
        vectors = vectors[:, :dim]
    return _normalise(vectors.reshape(-1))


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


def _faiss() -> Any:
    try:
        import faiss
    except ImportError:
        raise ImportError("concept building needs faiss: pip install faiss-cpu (or faiss-gpu)") from None
    return faiss


def _as_matrix(name: str, values: np.ndarray) -> np.ndarray:
    matrix = np.ascontiguousarray(values, dtype=np.float32)
    if matrix.ndim != 2 or matrix.shape[0] == 0 or matrix.shape[1] == 0:
        raise ValueError(f"{name} must be a non-empty [N, D] array, got shape {tuple(matrix.shape)}")
    if not np.isfinite(matrix).all():
        raise ValueError(f"{name} hold NaN or infinite values")
    return matrix


def kmeans(
    embeddings: np.ndarray, num_centres: int, iterations: int = 20, seed: int = 0, gpu: bool | None = None
) -> np.ndarray:
    """``[K, D]`` float32 unit centres of spherical k-means (faiss) over ``[N, D]`` embeddings.

    Runs on the GPU when faiss has one and ``gpu`` is not False; ``gpu=True`` without one is an error.
    """
    faiss = _faiss()
    data = _normalise(_as_matrix("embeddings", embeddings))
    count, width = data.shape
    if num_centres < 1:
        raise ValueError(f"the number of centres must be >= 1, got {num_centres}")
    if num_centres > count:
        raise ValueError(f"cannot make {num_centres} centres from {count} samples: use at most {count} centres")
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    if gpu and not gpus:
        raise ValueError("gpu=True but this faiss build sees no GPU (install faiss-gpu, or leave gpu unset)")
    use_gpu = bool(gpus) and gpu is not False
    clustering = faiss.Kmeans(width, num_centres, niter=iterations, seed=seed, spherical=True, gpu=use_gpu)
    clustering.train(data)
    return _normalise(clustering.centroids.reshape(num_centres, width))


def nearest_centres(embeddings: np.ndarray, centres: np.ndarray, top_k: int | None = None) -> np.ndarray:
    """``[N, top_k]`` int64 indices of each embedding's nearest centres by cosine, nearest first (``top_k``
    defaults to ``min(DEFAULT_TOP_K, number of centres)``)."""
    faiss = _faiss()
    data = _normalise(_as_matrix("embeddings", embeddings))
    bank = _normalise(_as_matrix("centres", centres))
    if data.shape[1] != bank.shape[1]:
        raise ValueError(f"embeddings are {data.shape[1]}-dim but the centres are {bank.shape[1]}-dim")
    top_k = min(DEFAULT_TOP_K, bank.shape[0]) if top_k is None else top_k
    if not 1 <= top_k <= bank.shape[0]:
        raise ValueError(f"top_k must be between 1 and the number of centres ({bank.shape[0]}), got {top_k}")
    index = faiss.IndexFlatIP(bank.shape[1])
    index.add(bank)
    _, ids = index.search(data, top_k)
    return ids.astype(np.int64)


def _relocate(value: str, old_base: Path, new_base: Path) -> str:
    """A path relative to ``old_base`` made relative to ``new_base`` (absolute paths stay as they are)."""
    if os.path.isabs(value) or old_base == new_base:
        return value
    return Path(os.path.relpath(os.path.abspath(old_base / value), new_base)).as_posix()


def write_manifest(
    records: Sequence[ManifestRecord],
    manifest: str | os.PathLike[str],
    out_manifest: str | os.PathLike[str],
    labels: dict[int, Sequence[int]],
) -> Path:
    """Write ``out_manifest`` (atomically): ``records`` (read from ``manifest``) in order with their keys,
    ``labels`` replaced where ``labels`` has the line number, and relative paths made relative to the new
    manifest's folder."""
    old_base = Path(os.path.abspath(Path(manifest).parent))
    new_base = Path(os.path.abspath(Path(out_manifest).parent))
    lines = []
    for record in records:
        data = dict(record.data)
        for key in PATH_KEYS:
            if isinstance(data.get(key), str) and data[key]:
                data[key] = _relocate(data[key], old_base, new_base)
        if record.line_no in labels:
            data["labels"] = [int(v) for v in labels[record.line_no]]
        lines.append(json.dumps(data, ensure_ascii=False) + "\n")
    return atomic_write(out_manifest, "".join(lines).encode("utf-8"))


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
    ``min(DEFAULT_TOP_K, num_centres)``), plus the centres ``[K, D]`` float32 as ``.npy`` (default
    ``<out_manifest stem>.centres.npy``).

    With ``heads`` only those samples are labelled; other lines are copied with their labels unchanged.
    Both files are written atomically. Returns a summary: counts, sizes, paths and seconds taken.
    """
    start = time.perf_counter()
    _check_embedding_options(batch_size, frames, dim)
    if num_centres < 1:
        raise ValueError(f"the number of centres must be >= 1, got {num_centres}")
    top_k = min(DEFAULT_TOP_K, num_centres) if top_k is None else top_k
    if not 1 <= top_k <= num_centres:
        raise ValueError(f"top_k must be between 1 and the number of centres ({num_centres}), got {top_k}")
    all_records = read_records(manifest)
    records = select_records(all_records, manifest, heads)
    if num_centres > len(records):
        raise ValueError(
            f"cannot make {num_centres} centres from {len(records)} samples: use at most {len(records)} centres"
        )
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
