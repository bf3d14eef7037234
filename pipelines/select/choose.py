"""Select, stage 3: SemDeDup and top-N inside every cluster, then the selected shards.

Pass 1 groups the assigned side tables by cluster (the engine's group-by) and decides every
image: kept, `semantic_duplicate` (naming the kept key) or `not_selected`. Pass 2 regroups the
small decision table by part; pass 3 rewrites each input shard with its selected samples (the
json member gains the cluster and distance) and its rejects. Every pass is resumable.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from fusionweave.pipelines.storage.build_folder import StageFolder
from fusionweave.pipelines.storage.published import published, published_files
from fusionweave.pipelines.engine import Engine
from fusionweave.pipelines.runner import PartResult, Stage
from fusionweave.pipelines.select import cluster, embed
from fusionweave.pipelines.select.config import SelectConfig
from fusionweave.pipelines.select.summary import summarise
from fusionweave.pipelines.storage.shard_sink import make_rejects, shard_name
from fusionweave.pipelines.storage.shard_source import iter_image_samples
from fusionweave.transforms.semdedup import KEEP_RULES, duplicate_roots, max_earlier_similarity, seeded_uniform

STAGE = "select"
DUPLICATE = "semantic_duplicate"
NOT_SELECTED = "not_selected"
DECISIONS = pa.schema([("part", pa.string()), ("idx", pa.int64()), ("key", pa.string()), ("cluster", pa.int32()),
                       ("distance", pa.float32()), ("max_sim", pa.float32()), ("reason", pa.string()),
                       ("dup_of", pa.string()), ("detail", pa.string())])


def _rank_key(rule: str, sim: np.ndarray, keys: pa.ChunkedArray, seed: int) -> np.ndarray:
    """The sort key `order_by` uses for `rule` (stable sorts on it give the same order)."""
    if rule == "farthest":  # least similar to the centroid first
        return sim
    if rule == "nearest":
        return -sim
    if rule == "random":
        return seeded_uniform(keys.to_pylist(), seed)
    raise ValueError(f"unknown rule {rule!r}; expected one of {KEEP_RULES}")


def _within_clusters(key: np.ndarray, cid: np.ndarray) -> np.ndarray:
    """Positions sorted by cluster, then `key`, ties in position order: per cluster, what a stable
    `order_by` over that cluster's rows gives."""
    return np.lexsort((key, cid))


def decide_bucket(cfg: SelectConfig, seed: int) -> Callable[[pa.Table], pa.Table]:
    """Every cluster of a group decided in one pass: one sort, the keep and rank orders and the
    reject columns for all clusters at once, per cluster only its similarity blocks; rows in
    (cluster, part, idx) order. (Sorting and building a table per cluster cost most of the time
    at ~100 rows a cluster.)"""
    sd, top = cfg.semdedup, cfg.top_n

    def fn(bucket: pa.Table) -> pa.Table:
        if bucket.num_rows == 0:
            return DECISIONS.empty_table()
        perm = pc.sort_indices(bucket, sort_keys=[("cluster", "ascending"), ("part", "ascending"),
                                                  ("idx", "ascending")])  # ties resolve the same in every run
        g = bucket.select(["part", "idx", "key", "cluster", "distance"]).take(perm)
        n = g.num_rows
        c = g.column("cluster").to_numpy()
        cid = np.cumsum(np.r_[True, c[1:] != c[:-1]]) - 1  # cluster number within the group
        starts = np.flatnonzero(np.r_[True, c[1:] != c[:-1]])
        ends = np.r_[starts[1:], n]
        keys = g.column("key")
        sim = 1.0 - g.column("distance").to_numpy()
        reason = np.full(n, None, object)
        dup_of = np.full(n, None, object)
        detail = np.full(n, None, object)
        max_sim = np.full(n, np.nan, np.float32)
        if sd.enabled:
            order = _within_clusters(_rank_key(sd.keep, sim, keys, seed), cid)  # keep order, cluster by cluster
            emb, rows = embed.embeddings_of(bucket), perm.to_numpy()[order]
            m = np.full(n, -np.inf, np.float32)
            arg = np.full(n, -1, np.int64)
            for a, b in zip(starts, ends):
                if b - a > 1:  # converted cluster by cluster: a bucket-wide float32 copy was slower
                    m[a:b], arg_c = max_earlier_similarity(emb[rows[a:b]], sd.block_size)
                    arg[a:b] = np.where(arg_c >= 0, arg_c + a, -1)
            root = duplicate_roots(m, arg, sd.eps)  # chains stay inside their cluster
            max_sim[order] = np.where(np.isfinite(m), m, np.nan)
            dups = np.flatnonzero(root >= 0)
            pos, kept, near = order[dups], order[root[dups]], order[arg[dups]]
            kept_keys = keys.take(pa.array(kept)).to_pylist()
            near_keys = keys.take(pa.array(near)).to_pylist()
            reason[pos] = DUPLICATE
            dup_of[pos] = kept_keys
            detail[pos] = [f"duplicate of {k} (cosine {m[j]:.4f} with {nk}; eps {sd.eps}, keep {sd.keep})"
                           for j, k, nk in zip(dups, kept_keys, near_keys)]
        if top.n is not None:
            cand = np.flatnonzero(reason == None)  # noqa: E711 - elementwise on an object array
            ranked = cand[_within_clusters(_rank_key(top.rank, sim[cand], keys.take(pa.array(cand)), seed), cid[cand])]
            first = np.searchsorted(cid[ranked], cid[ranked], side="left")  # each cluster's first rank
            rank_no = np.arange(1, len(ranked) + 1) - first
            out = rank_no > top.n
            pos = ranked[out]
            reason[pos] = NOT_SELECTED
            detail[pos] = [f"rank {r} by {top.rank} in cluster {cl}; top {top.n}"
                           for r, cl in zip(rank_no[out].tolist(), c[pos].tolist())]
        return pa.table({"part": g.column("part"), "idx": g.column("idx"), "key": keys, "cluster": g.column("cluster"),
                         "distance": g.column("distance"), "max_sim": pa.array(max_sim, pa.float32(), from_pandas=True),
                         "reason": pa.array(reason, pa.string()), "dup_of": pa.array(dup_of, pa.string()),
                         "detail": pa.array(detail, pa.string())}, schema=DECISIONS)
    return fn


def decide_cluster(cfg: SelectConfig, seed: int) -> Callable[[pa.Table], pa.Table]:
    """One cluster's rows: a group of one cluster."""
    return decide_bucket(cfg, seed)


def _by_idx(group: pa.Table) -> pa.Table:
    return group.sort_by("idx")


def decisions_for(folder: StageFolder, part: str) -> pa.Table:
    files = published_files(folder.work / "by_part")
    if not files:
        return DECISIONS.empty_table()
    return pads.dataset([str(f) for f in files], format="parquet", schema=DECISIONS).to_table(
        filter=pc.field("part") == part).sort_by("idx")


def write_part(folder: StageFolder, part: dict[str, Any]) -> PartResult:
    p = part["part"]
    d = decisions_for(folder, p)
    by_idx = {r["idx"]: r for r in d.to_pylist()}
    kept: list[dict[str, Any]] = []
    bad: list[dict[str, Any]] = []
    for item in iter_image_samples(part["input"], part.get("expected")):
        if isinstance(item, dict) or item.index not in by_idx:
            continue  # rejected by the embed stage, which accounts for it
        r = by_idx.pop(item.index)
        if r["key"] != item.key:
            raise RuntimeError(f"select part {p}: sample {item.index} is {item.key!r}, the embeddings say {r['key']!r}; "
                               "the input changed since the embed stage")
        if r["reason"] is not None:
            step = "semdedup" if r["reason"] == DUPLICATE else "top_n"
            bad.append({"key": item.key, "step": step, "reason": r["reason"], "detail": r["detail"],
                        "url": item.meta.get("url")})
            continue
        meta = {**item.meta, "select": {"cluster": r["cluster"], "centroid_distance": round(r["distance"], 6)}}
        kept.append({"__key__": item.key, **{k: v for k, v in item.members.items() if k != "json"}, "json": meta})
    if by_idx:
        raise RuntimeError(f"select part {p}: {len(by_idx)} embedded samples are missing from {part['input']}")
    return PartResult(d.num_rows, ["semdedup", "top_n"], make_rejects(bad, STAGE), samples=kept or None,
                      name=shard_name(int(p)))


def stage(cfg: SelectConfig, out: Path, engine: Engine, parts: list[dict[str, Any]], seed: int) -> Stage:
    folder = StageFolder(out, STAGE)

    def prepare(folder: StageFolder) -> None:
        # a part whose every sample was rejected has an empty side table (and no embedding width)
        assigned = [p for p in sorted((Path(out) / cluster.STAGE).glob("shard-*.parquet"))
                    if pq.ParquetFile(p).metadata.num_rows]
        if published(folder.work / "decisions") is None:
            engine.group_apply(assigned, ["key", "part", "idx", "cluster", "distance", "bucket", "embedding"], "bucket",
                               decide_bucket(cfg, seed), folder.work / "decisions", desc="select: semdedup + top-n")
        if published(folder.work / "by_part") is None:
            engine.group_apply(published_files(folder.work / "decisions"), DECISIONS.names, "part", _by_idx,
                               folder.work / "by_part", desc="select: decisions by shard")

    def plan() -> list[dict[str, Any]]:
        embedded = StageFolder(out, embed.STAGE).entries()
        return [p for p in parts if p["part"] in embedded]

    return Stage(STAGE, plan=plan, work=lambda p: write_part(folder, p), upstream=cluster.STAGE, prepare=prepare,
                 desc="select: write shards",
                 conclude=lambda _: summarise(folder, cfg, StageFolder(out, cluster.STAGE).stats().get("kmeans", {})))
