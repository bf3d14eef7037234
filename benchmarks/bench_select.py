"""Select at scale on synthetic embeddings (unit float16 vectors from a Gaussian mixture).

kmeans:   the `cluster` stage (seeded training sample, faiss k-means, then assignment of every
          embedding on Ray with the centroids broadcast, writing the assigned side tables) vs
          bare faiss doing the same in one loop (same sample, same k, same iterations, then
          `faiss.knn` file by file, writing key/cluster/distance).
semdedup: the `select` stage's per-cluster pass (group by cluster on the engine, blocked
          SemDeDup eps 0.4 + top-20) vs a bare numpy loop (everything in memory, sort by cluster,
          one full similarity matrix per cluster, triu max), as in SemDeDup's reference code.
Peak memory is the summed USS of this process and its children (Ray's daemons and workers),
sampled every 200 ms; growth is that peak over the level when the side started (bare runs
first, and the allocators keep part of what it freed, which ours then starts with).

    python benchmarks/bench_select.py --rows 1000000 --dim 512 --clusters 1000 --dedup-clusters 10000
"""
from __future__ import annotations

import argparse
import shutil
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import Result, emit, parse  # noqa: E402
from fusionweave.orchestration.ray_engine import RayEngine  # noqa: E402
from fusionweave.pipelines.storage.build_folder import StageFolder  # noqa: E402
from fusionweave.pipelines.storage.published import published_files  # noqa: E402
from fusionweave.pipelines.runner import PartResult, commit_part, run_stage  # noqa: E402
from fusionweave.pipelines.select import choose, cluster, embed  # noqa: E402
from fusionweave.pipelines.select.config import ClusterConfig, SelectConfig  # noqa: E402
from fusionweave.pipelines.storage.shard_sink import shard_name  # noqa: E402
from fusionweave.transforms import kmeans  # noqa: E402


class PeakMemory:
    """`peak`, and `growth`: the peak over the first sample. The side run second starts with what
    the first left in the allocators of this process (Arrow's pool keeps freed memory), so its
    absolute peak is not its own; the growth is."""

    def __init__(self) -> None:
        self.peak = 0
        self.start: int | None = None
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for p in [me, *me.children(recursive=True)]:
                try:
                    total += p.memory_full_info().uss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)
            self.start = total if self.start is None else self.start
            time.sleep(0.2)

    def __enter__(self) -> "PeakMemory":
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()

    @property
    def growth(self) -> int:
        return self.peak - (self.start or 0)


def memory(bare: PeakMemory, ours: PeakMemory) -> dict:
    return {"bare_peak_gib": round(bare.peak / 2**30, 2), "ours_peak_gib": round(ours.peak / 2**30, 2),
            "bare_growth_gib": round(bare.growth / 2**30, 2), "ours_growth_gib": round(ours.growth / 2**30, 2)}


def vectors(rng: np.random.Generator, centers: np.ndarray, labels: np.ndarray, noise: float) -> np.ndarray:
    x = centers[labels] + noise * rng.standard_normal((len(labels), centers.shape[1]), dtype=np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float16)


def make_embed_stage(out: Path, rows: int, dim: int, per_part: int, seed: int = 0) -> None:
    folder = StageFolder(out, embed.STAGE)
    if folder.is_complete():
        return
    folder.prepare()
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((500, dim), dtype=np.float32)
    entries = []
    for i, start in enumerate(range(0, rows, per_part)):
        n = min(per_part, rows - start)
        emb = vectors(rng, centers, rng.integers(0, 500, n), 0.6)
        t = embed.side_table([f"k{start + j:09d}" for j in range(n)], np.arange(n), emb)
        entries.append(commit_part(folder, {"part": f"{i:06d}"}, PartResult(n, ["embed"], table=t,
                                                                          name=shard_name(i, "parquet"))))
    folder.finish(entries)


def make_cluster_stage(out: Path, rows: int, dim: int, k: int, per_part: int, seed: int = 1) -> None:
    """Assigned side tables with `k` clusters of about rows/k images, some near-duplicates."""
    folder = StageFolder(out, cluster.STAGE)
    if folder.is_complete():
        return
    folder.prepare()
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((k, dim), dtype=np.float32)
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    entries = []
    for i, start in enumerate(range(0, rows, per_part)):
        n = min(per_part, rows - start)
        labels = rng.integers(0, k, n)
        emb = vectors(rng, centers * 0.9, labels, 0.05)  # noise 0.05 x sqrt(512): most pairs far apart
        dup = rng.random(n) < 0.1  # 10% near-copies of the row before
        emb[1:][dup[1:]] = emb[:-1][dup[1:]]
        labels[1:][dup[1:]] = labels[:-1][dup[1:]]
        dist = 1 - np.sum(emb.astype(np.float32) * centers[labels], axis=1)
        t = embed.side_table([f"k{start + j:09d}" for j in range(n)], np.arange(n), emb)
        t = pa.table({"key": t.column("key"), "part": pa.array([f"{i:06d}"] * n), "idx": t.column("idx"),
                      "cluster": pa.array(labels.astype(np.int32)), "distance": pa.array(dist.astype(np.float32)),
                      "bucket": pa.array((labels % cluster.buckets_for(rows, k)).astype(np.int32)),
                      "embedding": t.column("embedding")})
        entries.append(commit_part(folder, {"part": f"{i:06d}"}, PartResult(n, ["assign"], table=t,
                                                                          name=shard_name(i, "parquet"))))
    folder.finish(entries, info={"kmeans": {"clusters": k}})


def bare_kmeans(src: Path, dst: Path, k: int, sample: int, niter: int, seed: int) -> None:
    files = sorted(src.glob("shard-*.parquet"))
    counts = [pq.ParquetFile(f).metadata.num_rows for f in files]
    picks = kmeans.sample_rows(counts, min(sample, sum(counts)), seed)
    x = np.concatenate([embed.embeddings_of(pq.read_table(f, columns=["embedding"]).take(pa.array(r)))
                        for f, r in zip(files, picks) if len(r)])
    import faiss

    km = faiss.Kmeans(x.shape[1], k, niter=niter, seed=seed, spherical=True,
                      max_points_per_centroid=len(x) // k + 2, min_points_per_centroid=1)
    km.train(x.astype(np.float32))
    dst.mkdir(parents=True, exist_ok=True)
    for f in files:
        t = pq.read_table(f)
        sims, ids = faiss.knn(embed.embeddings_of(t).astype(np.float32), km.centroids, 1,
                              metric=faiss.METRIC_INNER_PRODUCT)
        pq.write_table(pa.table({"key": t.column("key"), "cluster": ids[:, 0].astype(np.int32),
                                 "distance": (1 - sims[:, 0]).astype(np.float32)}), dst / f.name)


def bare_semdedup(src: Path, eps: float, top: int) -> int:
    t = pa.concat_tables([pq.read_table(f, columns=["cluster", "distance", "embedding"])
                          for f in sorted(src.glob("shard-*.parquet"))])
    c = t.column("cluster").to_numpy()
    emb = embed.embeddings_of(t)
    dist = t.column("distance").to_numpy()
    order = np.argsort(c, kind="stable")
    bounds = np.flatnonzero(np.r_[True, np.diff(c[order]) != 0, True])
    kept = 0
    for a, b in zip(bounds[:-1], bounds[1:]):
        idx = order[a:b][np.argsort(-dist[order[a:b]], kind="stable")]  # farthest first
        e = emb[idx].astype(np.float32)
        s = np.triu(e @ e.T, k=1)
        m = s.max(axis=0)
        kept += min(top, int((m <= 1 - eps).sum()))
    return kept


def run_kmeans(work: Path, engine: RayEngine, args: argparse.Namespace) -> dict:
    make_embed_stage(work, args.rows, args.dim, args.per_part)
    shutil.rmtree(work / cluster.STAGE, ignore_errors=True)
    shutil.rmtree(work / "bare", ignore_errors=True)
    with PeakMemory() as mb:
        t0 = time.perf_counter()
        bare_kmeans(work / embed.STAGE, work / "bare", args.clusters, args.train_sample, args.niter, 0)
        bare = time.perf_counter() - t0
    cfg = ClusterConfig(clusters=args.clusters, train_sample=args.train_sample, niter=args.niter)
    with PeakMemory() as mo:
        t0 = time.perf_counter()
        run_stage(engine, work, cluster.stage(cfg, work, engine, seed=0))
        ours = time.perf_counter() - t0
    return {"bare_s": round(bare, 3), "ours_s": round(ours, 3), **memory(mb, mo)}


def run_semdedup(work: Path, engine: RayEngine, args: argparse.Namespace) -> dict:
    make_cluster_stage(work, args.rows, args.dim, args.dedup_clusters, args.per_part)
    cfg = SelectConfig.model_validate({"embed": {"model": "unused"}, "semdedup": {"eps": 0.4}, "top_n": {"n": 20}})
    folder = StageFolder(work, choose.STAGE)
    shutil.rmtree(folder.dir, ignore_errors=True)
    folder.prepare()
    with PeakMemory() as mb:
        t0 = time.perf_counter()
        bare_kept = bare_semdedup(work / cluster.STAGE, 0.4, 20)
        bare = time.perf_counter() - t0
    with PeakMemory() as mo:
        t0 = time.perf_counter()
        engine.group_apply(sorted((work / cluster.STAGE).glob("shard-*.parquet")),
                           ["key", "part", "idx", "cluster", "distance", "bucket", "embedding"], "bucket",
                           choose.decide_bucket(cfg, 0), folder.work / "decisions", desc="semdedup")
        ours = time.perf_counter() - t0
    d = pa.concat_tables([pq.read_table(f, columns=["reason"]) for f in published_files(folder.work / "decisions")])
    ours_kept = d.num_rows - d.column("reason").is_valid().to_numpy(zero_copy_only=False).sum()
    return {"bare_s": round(bare, 3), "ours_s": round(ours, 3), **memory(mb, mo), "rows": d.num_rows, "selected_ours": int(ours_kept), "selected_bare": bare_kept}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--clusters", type=int, default=1000)
    ap.add_argument("--train-sample", type=int, default=100_000)
    ap.add_argument("--niter", type=int, default=20)
    ap.add_argument("--dedup-clusters", type=int, default=10_000)
    ap.add_argument("--per-part", type=int, default=10_000)
    ap.add_argument("--only", choices=["kmeans", "semdedup"], default=None)
    ap.add_argument("--object-store-gib", type=float, default=1.0)
    ap.add_argument("--local-group-max-rows", type=int, default=250_000,
                    help="side tables up to this many rows are grouped in the driver, not shuffled on Ray")
    ap.add_argument("--local-group-max-gib", type=float, default=2.0, help="... or up to this size")
    ap.add_argument("--work", type=Path, default=Path("/tmp/fusionweave-bench-select"))
    args = parse(ap, {"ci": {"rows": 20_000, "dim": 64, "clusters": 20, "train_sample": 5_000, "niter": 5,
                             "dedup_clusters": 50, "per_part": 5_000}})
    # the generated stages are kept between runs, so their folder names every option that shapes them:
    # a ci run's 20k x 64 inputs must never stand in for a full run's 1M x 512
    work = args.work / f"{args.rows}x{args.dim}-per{args.per_part}"
    work.mkdir(parents=True, exist_ok=True)
    results = []
    with RayEngine(num_cpus=2, progress=False, object_store_memory=int(args.object_store_gib * 2**30),
                   local_group_max_rows=args.local_group_max_rows,
                   local_group_max_bytes=int(args.local_group_max_gib * 2**30)) as engine:
        for name, fn, compares in (
                ("kmeans", run_kmeans, f"cluster stage (faiss k-means k={args.clusters}, {args.niter} iterations, "
                                       f"assignment on Ray) vs bare faiss, {args.rows:,} x {args.dim}"),
                ("semdedup", run_semdedup, f"select's per-cluster pass (blocked SemDeDup eps 0.4, top-20) vs bare "
                                           f"numpy, {args.rows:,} x {args.dim} in {args.dedup_clusters:,} clusters")):
            if args.only in (None, name):
                r = fn(work / ("km" if name == "kmeans" else f"se-k{args.dedup_clusters}"), engine, args)
                # seconds -> runs/s, so that above 1 is faster, as every other benchmark
                results.append(Result(f"select/{name}", compares, 1 / r["ours_s"], 1 / r["bare_s"], "runs/s", ">= 0.8",
                                      r))
    emit(results, args)


if __name__ == "__main__":
    main()
