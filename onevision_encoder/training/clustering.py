"""Concept banks with faiss: spherical k-means centres, and each embedding's nearest centres by cosine."""

from __future__ import annotations

from typing import Any

import numpy as np

DEFAULT_TOP_K = 10  # labels per sample, or the number of centres when there are fewer


def check_centres(num_centres: int, samples: int | None = None) -> None:
    """Refuse fewer than one centre, or more centres than ``samples`` (when known)."""
    if num_centres < 1:
        raise ValueError(f"the number of centres must be >= 1, got {num_centres}")
    if samples is not None and num_centres > samples:
        raise ValueError(f"cannot make {num_centres} centres from {samples} samples: use at most {samples} centres")


def resolve_top_k(top_k: int | None, num_centres: int) -> int:
    """``top_k``, default ``min(DEFAULT_TOP_K, num_centres)``; refused outside ``1..num_centres``."""
    top_k = min(DEFAULT_TOP_K, num_centres) if top_k is None else top_k
    if not 1 <= top_k <= num_centres:
        raise ValueError(f"top_k must be between 1 and the number of centres ({num_centres}), got {top_k}")
    return top_k


def normalise(vectors: np.ndarray) -> np.ndarray:
    """float32 rows of unit length (zero rows stay zero)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


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
    data = normalise(_as_matrix("embeddings", embeddings))
    count, width = data.shape
    check_centres(num_centres, count)
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    if gpu and not gpus:
        raise ValueError("gpu=True but this faiss build sees no GPU (install faiss-gpu, or leave gpu unset)")
    use_gpu = bool(gpus) and gpu is not False
    clustering = faiss.Kmeans(width, num_centres, niter=iterations, seed=seed, spherical=True, gpu=use_gpu)
    clustering.train(data)
    return normalise(clustering.centroids.reshape(num_centres, width))


def nearest_centres(embeddings: np.ndarray, centres: np.ndarray, top_k: int | None = None) -> np.ndarray:
    """``[N, top_k]`` int64 indices of each embedding's nearest centres by cosine, nearest first (``top_k``
    defaults to ``min(DEFAULT_TOP_K, number of centres)``)."""
    faiss = _faiss()
    data = normalise(_as_matrix("embeddings", embeddings))
    bank = normalise(_as_matrix("centres", centres))
    if data.shape[1] != bank.shape[1]:
        raise ValueError(f"embeddings are {data.shape[1]}-dim but the centres are {bank.shape[1]}-dim")
    top_k = resolve_top_k(top_k, bank.shape[0])
    index = faiss.IndexFlatIP(bank.shape[1])
    index.add(bank)
    _, ids = index.search(data, top_k)
    return ids.astype(np.int64)
