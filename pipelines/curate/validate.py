"""Curate, stage 3: decode and validate every downloaded image, then dedup across the whole
dataset (sha256 exact, perceptual-hash near duplicates) and write the curated shards.

Pass 1 decodes each shard in parallel and writes side tables of hashes; pass 2 groups those
hashes across all shards; pass 3 writes each final shard. Every pass is resumable.
"""
from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from fusionweave.pipelines.build_folder import PartEntry, StageFolder
from fusionweave.pipelines.curate import download
from fusionweave.pipelines.curate.config import CurateConfig
from fusionweave.pipelines.engine import Engine
from fusionweave.pipelines.global_dedup import apply_dups, band_rows, bucket_of, dups_for_part, run_exact, run_near
from fusionweave.pipelines.partitioned import run_parts
from fusionweave.pipelines.shard_sink import make_rejects, rejects_table, shard_name, write_parquet
from fusionweave.pipelines.shard_source import iter_image_samples
from fusionweave.transforms.image_steps import DecodeValidate
from fusionweave.transforms.image_validate import ImageLimits
from fusionweave.transforms.step import StepChain, StepStats

STAGE = "validate"
ROW_SCHEMA = pa.schema([("key", pa.string()), ("ord", pa.int64()), ("url", pa.string()), ("caption", pa.string()),
                        ("meta", pa.string()), ("image", pa.binary())])


def limits(cfg: CurateConfig) -> ImageLimits:
    v = cfg.validate_
    return ImageLimits(max_bytes=v.max_bytes, max_pixels=v.max_pixels, min_short_edge=v.min_short_edge,
                       max_aspect_ratio=v.max_aspect_ratio, jpeg_quality=v.jpeg_quality,
                       output_format=v.output_format)


def read_samples(path: Path, expected: int | None) -> tuple[pa.Table, list[dict[str, Any]]]:
    """Rows for the decode step, and rejects for whatever in the tar is not a usable sample."""
    rows: list[dict[str, Any]] = []
    bad: list[dict[str, Any]] = []
    for item in iter_image_samples(path, expected):
        if isinstance(item, dict):
            bad.append(item)
            continue
        m = item.members
        caption = m["txt"].decode("utf-8", "replace") if "txt" in m else item.meta.get("caption")
        rows.append({"key": item.key, "ord": int(item.meta.get("ord", -1)), "url": item.meta.get("url"),
                     "caption": caption, "meta": json.dumps(item.meta, sort_keys=True), "image": m[item.image_ext]})
    return pa.Table.from_pylist(rows, schema=ROW_SCHEMA), bad


def decode_part(cfg: CurateConfig, folder: StageFolder, part: dict[str, Any]) -> PartEntry:
    table, bad = read_samples(Path(part["input"]), part.get("expected"))
    kept, rejected, stats = StepChain([DecodeValidate(limits(cfg))])(table)
    read_st = StepStats(rows_in=table.num_rows + len(bad), rows_out=table.num_rows,
                        rejects=Counter(b["reason"] for b in bad), seconds=0.0)
    stats = {"read_shard": read_st, **stats}
    p = part["part"]
    kept = kept.append_column("part", pa.array([p] * kept.num_rows, pa.string())).sort_by("ord")
    write_parquet(folder.work / "decoded" / f"part-{p}.parquet", kept)
    sha = kept.select(["ord", "key", "part", "sha256"])
    sha = sha.append_column("bucket", bucket_of(sha.column("sha256").to_pylist(), cfg.validate_.dedup_buckets))
    write_parquet(folder.work / "sha" / f"part-{p}.parquet", sha)
    if cfg.validate_.near_dup:
        bands = band_rows(kept.column("ord").to_numpy(), kept.column("key").to_pylist(), kept.column("part").to_pylist(),
                          kept.column("phash").to_numpy(), cfg.validate_.phash_hamming_threshold)
        write_parquet(folder.work / "bands" / f"part-{p}.parquet", bands)
    rej = pa.concat_tables([rejects_table(rejected, STAGE), make_rejects(bad, STAGE)])
    write_parquet(folder.work / "rejects1" / f"part-{p}.parquet", rej)
    return PartEntry(p, table.num_rows + len(bad), rej.num_rows, stats)


def _json_member(r: dict[str, Any]) -> dict[str, Any]:
    src = json.loads(r["meta"])
    return {"key": r["key"], "url": r["url"], "ord": r["ord"], "width": r["width"], "height": r["height"],
            "format": r["ext"], "source_format": r["source_format"], "source_mode": r["source_mode"],
            "normalised": r["normalised"], "sha256": r["sha256"], "phash": f"{r['phash']:016x}",
            "source": {k: v for k, v in src.items() if k not in ("key", "url", "caption", "ord")}}


def finish_part(cfg: CurateConfig, folder: StageFolder, part: dict[str, Any], pass1: PartEntry) -> PartEntry:
    p = part["part"]
    t = pq.read_table(folder.work / "decoded" / f"part-{p}.parquet")
    stats = dict(pass1.stats)
    if cfg.validate_.dedup_sha256:
        t, stats["dedup_sha256"] = apply_dups(t, "dedup_sha256", dups_for_part(folder.work / "sha_dups", p))
    if cfg.validate_.near_dup:
        t, stats["near_dedup"] = apply_dups(t, "near_dedup", dups_for_part(folder.work / "near_dups", p))
    if "_reject_reason" in t.column_names:
        mask = t.column("_reject_reason").is_valid()
        rej = rejects_table(t.filter(mask), STAGE)
        t = t.filter(np.logical_not(mask.to_numpy(zero_copy_only=False)))
    else:
        rej = rejects_table(t.slice(0, 0), STAGE)
    rej = pa.concat_tables([pq.read_table(folder.work / "rejects1" / f"part-{p}.parquet"), rej])

    def samples() -> Any:
        for r in t.sort_by("ord").to_pylist():
            yield {"__key__": r["key"], r["ext"]: r["image"], "txt": r["caption"] or "", "json": _json_member(r)}

    return folder.commit(p, rows_in=pass1.rows_in, stats=stats, rejects=rej, inputs=[part["input"]],
                         name=shard_name(int(p)), samples=samples() if t.num_rows else None)


def plan(out: Path) -> list[dict[str, Any]]:
    entries = StageFolder(out, download.STAGE).entries()
    return [{"part": e.part, "input": str(Path(out) / download.STAGE / e.shard), "expected": e.count}
            for e in sorted(entries.values(), key=lambda e: e.part) if e.shard]


def run(cfg: CurateConfig, out: Path, engine: Engine, parts: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    folder = StageFolder(out, STAGE)
    if folder.is_complete():
        return folder.stats()
    t0 = time.perf_counter()
    parts = plan(out) if parts is None else parts
    by_id = {p["part"]: p for p in parts}
    cpus = cfg.validate_.task_cpus
    pass1 = run_parts(engine, StageFolder(folder.work, "pass1"), parts, lambda p: decode_part(cfg, folder, p),
                      num_cpus=cpus, desc="validate: decode")
    if cfg.validate_.dedup_sha256 and not (folder.work / "sha_dups").exists():
        run_exact(engine, sorted((folder.work / "sha").glob("*.parquet")), "sha256", "duplicate_sha256",
                  folder.work / "sha_dups", desc="validate: sha256 dedup")
    if cfg.validate_.near_dup and not (folder.work / "near_dups").exists():
        run_near(engine, sorted((folder.work / "bands").glob("*.parquet")), cfg.validate_.phash_hamming_threshold,
                 "near_duplicate", folder.work / "near_dups", desc="validate: near-dup")
    final = run_parts(engine, folder, parts, lambda p: finish_part(cfg, folder, by_id[p["part"]], pass1[p["part"]]),
                      num_cpus=cpus, desc="validate: write shards")
    return folder.finish(final.values(), None, time.perf_counter() - t0)

