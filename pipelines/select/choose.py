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
from fusionweave.transforms.semdedup import duplicate_roots, max_earlier_similarity, order_by

STAGE = "select"
DUPLICATE = "semantic_duplicate"
NOT_SELECTED = "not_selected"
DECISIONS = pa.schema([("part", pa.string()), ("idx", pa.int64()), ("key", pa.string()), ("cluster", pa.int32()),
                       ("distance", pa.float32()), ("max_sim", pa.float32()), ("reason", pa.string()),
                       ("dup_of", pa.string()), ("detail", pa.string())])


def decide_cluster(cfg: SelectConfig, seed: int) -> Callable[[pa.Table], pa.Table]:
    sd, top = cfg.semdedup, cfg.top_n

    def fn(group: pa.Table) -> pa.Table:
        g = group.sort_by([("part", "ascending"), ("idx", "ascending")])  # ties resolve the same in every run
        n = g.num_rows
        keys = g.column("key").to_pylist()
        sim = 1.0 - g.column("distance").to_numpy()
        reason: list[str | None] = [None] * n
        dup_of: list[str | None] = [None] * n
        detail: list[str | None] = [None] * n
        max_sim = np.full(n, np.nan, np.float32)
        if sd.enabled and n > 1:
            order = order_by(sd.keep, sim, keys, seed)
            m, arg = max_earlier_similarity(embed.embeddings_of(g)[order], sd.block_size)
            root = duplicate_roots(m, arg, sd.eps)
            max_sim[order] = np.where(np.isfinite(m), m, np.nan)
            for j in np.flatnonzero(root >= 0):
                pos, kept, near = order[j], order[root[j]], order[arg[j]]
                reason[pos], dup_of[pos] = DUPLICATE, keys[kept]
                detail[pos] = (f"duplicate of {keys[kept]} (cosine {m[j]:.4f} with {keys[near]}; "
                               f"eps {sd.eps}, keep {sd.keep})")
        alive = np.array([r is None for r in reason])
        if top.n is not None and alive.sum() > top.n:
            cand = np.flatnonzero(alive)
            ranked = cand[order_by(top.rank, sim[cand], [keys[i] for i in cand], seed)]
            for rank_no, pos in enumerate(ranked[top.n:], start=top.n + 1):
                reason[pos] = NOT_SELECTED
                detail[pos] = f"rank {rank_no} by {top.rank} in cluster {g.column('cluster')[0].as_py()}; top {top.n}"
        return pa.table({"part": g.column("part"), "idx": g.column("idx"), "key": g.column("key"),
                         "cluster": g.column("cluster"), "distance": g.column("distance"),
                         "max_sim": pa.array(max_sim, pa.float32(), from_pandas=True), "reason": pa.array(reason, pa.string()),
                         "dup_of": pa.array(dup_of, pa.string()), "detail": pa.array(detail, pa.string())},
                        schema=DECISIONS)
    return fn


def decide_bucket(cfg: SelectConfig, seed: int) -> Callable[[pa.Table], pa.Table]:
    """Many clusters per engine group: split them here, with one sort."""
    per_cluster = decide_cluster(cfg, seed)

    def fn(bucket: pa.Table) -> pa.Table:
        t = bucket.sort_by([("cluster", "ascending"), ("part", "ascending"), ("idx", "ascending")])
        c = t.column("cluster").to_numpy()
        starts = np.flatnonzero(np.r_[True, c[1:] != c[:-1]]) if len(c) else np.zeros(0, np.int64)
        ends = np.r_[starts[1:], len(c)]
        out = [per_cluster(t.slice(a, b - a)) for a, b in zip(starts, ends)]
        return pa.concat_tables(out) if out else DECISIONS.empty_table()
    return fn


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
