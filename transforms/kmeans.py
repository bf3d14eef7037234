"""Spherical k-means with faiss, and nearest-centroid assignment. No engine here: the stage
decides where these run (training once, on GPU when faiss sees one; assignment in parallel)."""
from __future__ import annotations

import math

import numpy as np


def gpu_count() -> int:
    import faiss

    return faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0


def train(x: np.ndarray, k: int, niter: int, seed: int, use_gpu: bool, nredo: int = 1) -> tuple[np.ndarray, float]:
    """Unit-length centroids (k, d) float32 and the final objective (sum of similarities)."""
    import faiss

    x = np.ascontiguousarray(x, dtype=np.float32)
    if k > len(x):
        raise ValueError(f"k-means: {k} clusters need at least {k} training vectors, got {len(x)}")
    # the caller already drew the training sample; faiss must not subsample it again
    km = faiss.Kmeans(x.shape[1], k, niter=niter, nredo=nredo, seed=seed, spherical=True, gpu=use_gpu,
                      max_points_per_centroid=math.ceil(len(x) / k) + 1, min_points_per_centroid=1, verbose=False)
    km.train(x)
    return np.ascontiguousarray(km.centroids, dtype=np.float32), float(km.obj[-1]) if len(km.obj) else 0.0


def assign(x: np.ndarray, centroids: np.ndarray, threads: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centroid by cosine similarity: (cluster ids int32, cosine distance 1 - sim float32)."""
    import faiss

    if threads:
        faiss.omp_set_num_threads(threads)
    if len(x) == 0:
        return np.zeros(0, np.int32), np.zeros(0, np.float32)
    sims, ids = faiss.knn(np.ascontiguousarray(x, dtype=np.float32), centroids, 1, metric=faiss.METRIC_INNER_PRODUCT)
    return ids[:, 0].astype(np.int32), (1.0 - sims[:, 0]).astype(np.float32)


def sample_rows(counts: list[int], size: int, seed: int) -> list[np.ndarray]:
    """A seeded uniform sample of `size` rows over files holding `counts` rows: per file, the
    sorted row numbers to take (all rows when size >= total)."""
    total = sum(counts)
    chosen = np.arange(total) if size >= total else np.sort(np.random.default_rng(seed).choice(total, size, replace=False))
    bounds = np.cumsum([0, *counts])
    cut = np.searchsorted(chosen, bounds)  # chosen is sorted: one slice per file
    return [chosen[cut[i]:cut[i + 1]] - bounds[i] for i in range(len(counts))]
