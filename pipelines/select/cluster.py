"""Select, stage 2: k-means on a seeded sample of the embeddings, then every embedding assigned
to its nearest centroid in a parallel pass (centroids broadcast to the workers, one side table
at a time), so memory never holds more than the training sample and one part.

Output per part: the side table plus `cluster` and `distance` (1 - cosine similarity to the
centroid). `centroids.npy` and `kmeans.json` stay in the stage folder for reuse.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from fusionweave.pipelines.storage import store
from fusionweave.pipelines.storage.atomic import atomic_path, write_bytes_atomic
from fusionweave.pipelines.storage.build_folder import StageFolder
from fusionweave.pipelines.engine import ModelEngine, Shared
from fusionweave.pipelines.errors import BuildSetupError
from fusionweave.pipelines.runner import PartResult, Stage
from fusionweave.pipelines.select import embed
from fusionweave.pipelines.select.config import ClusterConfig
from fusionweave.transforms import kmeans

STAGE = "cluster"
CENTROIDS = "centroids.npy"
KMEANS_INFO = "kmeans.json"


class ClusterError(BuildSetupError):
    pass


def side_tables(out: Path) -> list[tuple[str, Path, int]]:
    entries = StageFolder(out, embed.STAGE).entries()
    return [(p, Path(out) / embed.STAGE / e.shard, e.count) for p, e in sorted(entries.items())]


ROWS_PER_BUCKET = 50_000


def buckets_for(images: int, clusters: int) -> int:
    """Clusters are grouped into buckets (cluster % buckets) for the per-cluster pass: one engine
    group per bucket of ~ROWS_PER_BUCKET rows, not one per cluster (a group costs the engine a
    fixed overhead, and there are 50,000 clusters)."""
    return max(1, min(clusters, -(-images // ROWS_PER_BUCKET)))


def train_centroids(cfg: ClusterConfig, folder: StageFolder, tables: list[tuple[str, Path, int]],
                    seed: int) -> dict[str, Any]:
    """Train once; a rerun reuses the saved centroids."""
    info_path = folder.dir / KMEANS_INFO
    if info_path.exists() and (folder.dir / CENTROIDS).exists():
        return json.loads(info_path.read_text())
    t0 = time.perf_counter()
    counts = [n for _, _, n in tables]
    total = sum(counts)
    k = cfg.resolve(total)
    if k > total:
        raise ClusterError(f"select.cluster.clusters is {k} but only {total} images have embeddings; "
                           "ask for at most that many clusters")
    picks = kmeans.sample_rows(counts, min(cfg.train_sample, total), seed)
    x = np.concatenate([embed.embeddings_of(pq.read_table(path, columns=["embedding"]).take(pa.array(rows)))
                        for (_, path, _), rows in zip(tables, picks) if len(rows)])
    use_gpu = cfg.use_gpu == "auto" and kmeans.gpu_count() > 0
    centroids, objective = kmeans.train(x, k, cfg.niter, seed, use_gpu, cfg.nredo)
    folder.prepare()
    with atomic_path(folder.dir / CENTROIDS) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, centroids)
    info = {"clusters": k, "buckets": buckets_for(total, k), "dim": int(x.shape[1]), "images": total, "train_sample": int(len(x)), "niter": cfg.niter, "nredo": cfg.nredo,
            "seed": seed, "gpu": use_gpu, "objective": objective, "train_seconds": round(time.perf_counter() - t0, 3)}
    write_bytes_atomic(info_path, json.dumps(info, indent=2).encode())
    return info


def assign_part(part: dict[str, Any], centroids: Shared, threads: int, buckets: int) -> PartResult:
    table = store.read_parquet(part["input"])
    ids, dist = kmeans.assign(embed.embeddings_of(table), centroids.get(), threads)
    out = pa.table({"key": table.column("key"), "part": pa.array([part["part"]] * table.num_rows, pa.string()),
                    "idx": table.column("idx"), "cluster": pa.array(ids, pa.int32()),
                    "distance": pa.array(dist, pa.float32()), "bucket": pa.array(ids % buckets, pa.int32()),
                    "embedding": table.column("embedding")})
    return PartResult(table.num_rows, ["assign"], table=out, name=Path(part["input"]).name)


def stage(cfg: ClusterConfig, out: Path, engine: ModelEngine, seed: int) -> Stage:
    tables: list[tuple[str, Path, int]] = []
    trained: dict[str, Any] = {}

    def prepare(folder: StageFolder) -> None:
        tables.extend(side_tables(out))  # read once the runner has found `embed` complete
        trained.update(train_centroids(cfg, folder, tables, seed))
        trained["centroids"] = engine.share(np.load(folder.dir / CENTROIDS))

    def work(part: dict[str, Any]) -> PartResult:
        return assign_part(part, trained["centroids"], max(1, round(cfg.task_cpus)), trained["buckets"])

    return Stage(STAGE, plan=lambda: [{"part": p, "input": str(path)} for p, path, _ in tables], work=work,
                 upstream=embed.STAGE, prepare=prepare, cpus=cfg.task_cpus, desc="select: assign clusters",
                 conclude=lambda _: {"kmeans": {k: v for k, v in trained.items() if k != "centroids"}})
