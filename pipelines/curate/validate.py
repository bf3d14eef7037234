"""Curate, stage 3: decode and validate every downloaded image, then dedup across the whole
dataset (sha256 exact, perceptual-hash near duplicates) and write the curated shards.

Pass 1 decodes each shard in parallel and writes side tables of hashes; pass 2 groups those
hashes across all shards; pass 3 writes each final shard. Every pass is resumable.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np
import pyarrow as pa

from fusionweave.pipelines.storage import store
from fusionweave.pipelines.storage.build_folder import PartEntry, StageFolder
from fusionweave.pipelines.storage.location import Loc, location
from fusionweave.pipelines.storage.published import published, published_files
from fusionweave.pipelines.curate import download, metadata
from fusionweave.pipelines.curate.config import CurateConfig
from fusionweave.pipelines.engine import Engine
from fusionweave.pipelines.global_dedup import apply_dups, band_rows, bucket_of, dups_for_part, run_exact, run_near
from fusionweave.pipelines.runner import PartResult, Stage, run_parts, run_stage
from fusionweave.pipelines.storage.shard_sink import encode_sample, make_rejects, rejects_table, shard_name, write_parquet
from fusionweave.pipelines.storage.shard_source import READ_SHARD, ImageSample, Sample, image_sample, iter_image_samples
from fusionweave.transforms.image_steps import DecodeValidate
from fusionweave.transforms.image_validate import ImageLimits
from fusionweave.transforms.step import StepChain

STAGE = "validate"
SHA_DUPS, NEAR_DUPS = "sha_dups", "near_dups"  # the work folders of the dedup decisions
ROW_SCHEMA = pa.schema([("key", pa.string()), ("ord", pa.int64()), ("url", pa.string()), ("caption", pa.string()),
                        ("meta", pa.string()), ("image", pa.binary())])


def limits(cfg: CurateConfig) -> ImageLimits:
    v = cfg.validate_
    return ImageLimits(max_bytes=v.max_bytes, max_pixels=v.max_pixels, min_short_edge=v.min_short_edge,
                       max_aspect_ratio=v.max_aspect_ratio, jpeg_quality=v.jpeg_quality,
                       output_format=v.output_format)


def sample_rows(items: Iterable[ImageSample | dict]) -> tuple[pa.Table, list[dict[str, Any]]]:
    """Rows for the decode step, and rejects for whatever is not a usable sample."""
    rows: list[dict[str, Any]] = []
    bad: list[dict[str, Any]] = []
    for item in items:
        if isinstance(item, dict):
            bad.append(item)
            continue
        m = item.members
        caption = m["txt"].decode("utf-8", "replace") if "txt" in m else item.meta.get("caption")
        rows.append({"key": item.key, "ord": int(item.meta.get("ord", -1)), "url": item.meta.get("url"),
                     "caption": caption, "meta": json.dumps(item.meta, sort_keys=True), "image": m[item.image_ext]})
    return pa.Table.from_pylist(rows, schema=ROW_SCHEMA), bad


@dataclass
class PartRows:
    """A part's rows for the decode, what was rejected before it, and the steps that did it."""

    table: pa.Table
    rejects: list[dict[str, Any]]
    steps: list[str]
    extra: dict[str, Any] = field(default_factory=dict)


def read_part(cfg: CurateConfig, folder: StageFolder, part: dict[str, Any]) -> PartRows:
    """Read from the download's shard, or (fused) downloaded here: the samples handed on in memory
    exactly as that shard would hold them (same members, same bytes), with the download's rejects."""
    if not part.get("fused"):
        return PartRows(*sample_rows(iter_image_samples(location(part["input"]), part.get("expected"))), [READ_SHARD])
    fetched = download.fetch(cfg, folder, part)
    items = (image_sample(Sample(s["__key__"], {k: v for k, v in encode_sample(s).items() if k != "__key__"}), i)
             for i, s in enumerate(fetched.samples()))
    table, bad = sample_rows(items)
    return PartRows(table, [*fetched.rejects, *bad], [download.FETCH_STEP, READ_SHARD],
                    {"img2dataset": fetched.img2dataset})


def decode_part(cfg: CurateConfig, folder: StageFolder, part: dict[str, Any]) -> PartResult:
    t0 = time.perf_counter()
    read = read_part(cfg, folder, part)
    read_seconds = time.perf_counter() - t0
    chain = StepChain([DecodeValidate(limits(cfg))])
    kept, rejected, stats = chain(read.table)
    p = part["part"]
    kept = kept.append_column("part", pa.array([p] * kept.num_rows, pa.string())).sort_by("ord")
    write_parquet(folder.work / "decoded" / f"part-{p}.parquet", kept)
    sha = kept.select(["ord", "key", "part", "sha256"])
    sha = sha.append_column("bucket", bucket_of(sha.column("sha256"), cfg.validate_.dedup_buckets))
    write_parquet(folder.work / "sha" / f"part-{p}.parquet", sha)
    if cfg.validate_.near_dup:
        bands = band_rows(kept.column("ord").to_numpy(), kept.column("key").to_pylist(), kept.column("part").to_pylist(),
                          kept.column("phash").to_numpy(), cfg.validate_.phash_hamming_threshold)
        write_parquet(folder.work / "bands" / f"part-{p}.parquet", bands)
    rej = pa.concat_tables([rejects_table(rejected, STAGE), make_rejects(read.rejects, STAGE)])
    write_parquet(folder.work / "rejects1" / f"part-{p}.parquet", rej)
    return PartResult(read.table.num_rows + len(read.rejects), [*read.steps, *(s.name for s in chain.steps)], rej,
                      {read.steps[0]: read_seconds, **{k: v.seconds for k, v in stats.items()}},
                      count=kept.num_rows, keep_rejects=False, extra=read.extra)


def _json_member(r: dict[str, Any]) -> dict[str, Any]:
    src = json.loads(r["meta"])
    return {"key": r["key"], "url": r["url"], "ord": r["ord"], "width": r["width"], "height": r["height"],
            "format": r["ext"], "source_format": r["source_format"], "source_mode": r["source_mode"],
            "normalised": r["normalised"], "sha256": r["sha256"], "phash": f"{r['phash']:016x}",
            "source": {k: v for k, v in src.items() if k not in ("key", "url", "caption", "ord")}}


def finish_part(cfg: CurateConfig, folder: StageFolder, part: dict[str, Any], pass1: PartEntry,
                dups: dict[str, list[Loc]]) -> PartResult:
    p = part["part"]
    t = store.read_parquet(folder.work / "decoded" / f"part-{p}.parquet")
    steps, seconds = list(pass1.stats), {k: v.seconds for k, v in pass1.stats.items()}
    for step, on, name in (("dedup_sha256", cfg.validate_.dedup_sha256, SHA_DUPS),
                           ("near_dedup", cfg.validate_.near_dup, NEAR_DUPS)):
        if on:
            t0 = time.perf_counter()
            t = apply_dups(t, step, dups_for_part(dups[name], p))
            steps.append(step)
            seconds[step] = time.perf_counter() - t0
    if "_reject_reason" in t.column_names:
        mask = t.column("_reject_reason").is_valid()
        rej = rejects_table(t.filter(mask), STAGE)
        t = t.filter(np.logical_not(mask.to_numpy(zero_copy_only=False)))
    else:
        rej = rejects_table(t.slice(0, 0), STAGE)
    rej = pa.concat_tables([store.read_parquet(folder.work / "rejects1" / f"part-{p}.parquet"), rej])

    def samples() -> Any:
        for r in t.sort_by("ord").to_pylist():
            yield {"__key__": r["key"], r["ext"]: r["image"], "txt": r["caption"] or "", "json": _json_member(r)}

    return PartResult(pass1.rows_in, steps, rej, seconds, samples=samples() if t.num_rows else None,
                      name=shard_name(int(p)), extra=pass1.extra)


def plan(out: Loc, fused: bool) -> list[dict[str, Any]]:
    """The download's shards; fused, the metadata's parts, each downloaded and decoded in one task."""
    if fused:
        return [{**p, "fused": True} for p in download.plan(out)]
    entries = StageFolder(out, download.STAGE).entries()
    return [{"part": e.part, "input": str(out / download.STAGE / e.shard), "expected": e.count}
            for e in sorted(entries.values(), key=lambda e: e.part) if e.shard]


def stage(cfg: CurateConfig, out: Loc, engine: Engine, parts: list[dict[str, Any]] | None = None) -> Stage:
    """`parts`: shards named by the caller instead of this build folder's `download` stage.
    Without the download's shards kept (`curate.download.keep_shards: false`), each part is
    downloaded and decoded in one task: the bytes are checked once, never written and read back."""
    folder = StageFolder(out, STAGE)
    given, parts = parts is not None, list(parts or [])
    fused = not given and not cfg.download.keep_shards
    pass1: dict[str, PartEntry] = {}
    dups: dict[str, list[Loc]] = {}  # the files of each dedup's decisions, listed once they are published
    v, cpus = cfg.validate_, cfg.validate_.task_cpus

    def prepare(folder: StageFolder) -> None:
        if not given:
            parts.extend(plan(out, fused))  # read once the runner has found the upstream complete
        pass1.update(run_parts(engine, StageFolder(folder.work, "pass1"), parts, lambda p: decode_part(cfg, folder, p),
                               num_cpus=cfg.download.task_cpus if fused else cpus,
                               desc="validate: download + decode" if fused else "validate: decode"))
        if v.dedup_sha256 and published(folder.work / SHA_DUPS) is None:
            run_exact(engine, store.glob(folder.work / "sha", "*.parquet"), "sha256", "duplicate_sha256",
                      folder.work / SHA_DUPS, desc="validate: sha256 dedup")
        if v.near_dup and published(folder.work / NEAR_DUPS) is None:
            run_near(engine, store.glob(folder.work / "bands", "*.parquet"), v.phash_hamming_threshold,
                     "near_duplicate", folder.work / NEAR_DUPS, desc="validate: near-dup")
        dups.update({name: published_files(folder.work / name) for name in (SHA_DUPS, NEAR_DUPS)})

    upstream = None if given else metadata.STAGE if fused else download.STAGE
    return Stage(STAGE, plan=lambda: parts, work=lambda p: finish_part(cfg, folder, p, pass1[p["part"]], dups),
                 upstream=upstream, prepare=prepare, cpus=cpus, desc="validate: write shards")


def run(cfg: CurateConfig, out: Loc, engine: Engine, parts: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return run_stage(engine, out, stage(cfg, out, engine, parts))
