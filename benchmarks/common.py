"""Helpers shared by the benchmarks: synthetic LAION parquet and timing."""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def laion_parquet(path: Path, rows: int, seed: int = 0, dup_rate: float = 0.02) -> Path:
    """LAION-shaped rows: URLs (some duplicated), captions, sizes, scores."""
    if path.exists() and pq.ParquetFile(path).metadata.num_rows == rows:
        return path
    rng = np.random.default_rng(seed)
    ids = np.arange(rows)
    dups = rng.random(rows) < dup_rate
    ids[dups] = rng.integers(0, rows, dups.sum())
    hosts = np.array([f"img{i}.example.com" for i in range(1000)])
    urls = pa.array([f"https://{hosts[i % 1000]}/p/{i}.jpg" for i in ids])
    words = np.array(["a", "photo", "of", "the", "red", "cat", "on", "sofa", "city", "night", "sale", "logo"])
    lens = rng.integers(0, 30, rows)
    caps = pa.array([" ".join(words[rng.integers(0, len(words), n)]) for n in lens])
    t = pa.table({
        "URL": urls, "TEXT": caps,
        "WIDTH": pa.array(rng.integers(100, 2000, rows).astype(float)),
        "HEIGHT": pa.array(rng.integers(100, 2000, rows).astype(float)),
        "similarity": pa.array(rng.random(rows) * 0.5), "punsafe": pa.array(rng.random(rows)),
        "pwatermark": pa.array(rng.random(rows)),
    })
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(t, path, row_group_size=100_000)
    return path


def best_of(fn: Callable[[], object], repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)
