"""Curate, stage 1: LAION parquet -> filtered, URL-deduplicated URL shards for download.

Three passes, each resumable: filter every input range (parallel), find duplicate URLs across
the whole input (grouped by URL hash), then write each range's final shard and its rejects.
Ranges are fixed by the input files and `rows_per_shard`, so a rerun cuts the same shards.
"""
from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from fusionweave.pipelines.build_folder import PartEntry, StageFolder
from fusionweave.pipelines.curate.config import CurateConfig
from fusionweave.pipelines.engine import Engine
from fusionweave.pipelines.global_dedup import apply_dups, bucket_of, dups_for_part, run_exact
from fusionweave.pipelines.partitioned import run_parts
from fusionweave.pipelines.shard_sink import make_rejects, rejects_table, shard_name, write_parquet
from fusionweave.transforms.keys import key_for
from fusionweave.transforms.laion_columns import MissingColumnsError, normalise
from fusionweave.transforms.metadata_filters import CaptionLength, MaxAspectRatio, MinShortEdge, ScoreThreshold, UrlSafety
from fusionweave.transforms.step import Step, StepChain, StepStats, ensure_reject_columns, merge_stats
from fusionweave.transforms.url_safety import normalise_url

STAGE = "metadata"
OUTPUT_COLUMNS = ["key", "ord", "url", "caption", "width", "height", "similarity", "punsafe", "pwatermark",
                  "license", "sample_id", "source"]


def input_files(paths: list[Path]) -> list[Path]:
    files: list[Path] = []
    for p in paths:
        p = Path(p)
        files.extend(sorted(p.rglob("*.parquet")) if p.is_dir() else [p])
    return files


def plan(cfg: CurateConfig) -> list[dict[str, Any]]:
    """Row ranges of rows_per_shard over the inputs, in input order, with global ordinals."""
    parts: list[dict[str, Any]] = []
    ord_offset = 0
    size = cfg.metadata.rows_per_shard
    for f in input_files(cfg.metadata.input):
        try:
            n = pq.ParquetFile(f).metadata.num_rows
        except Exception as err:  # noqa: BLE001 - an unreadable file is a reject, not a crash
            parts.append({"part": f"{len(parts):06d}", "file": str(f), "start": 0, "stop": 0, "ord": ord_offset,
                          "error": f"{type(err).__name__}: {err}"[:300]})
            ord_offset += 1
            continue
        for start in range(0, max(n, 1), size):
            stop = min(n, start + size)
            parts.append({"part": f"{len(parts):06d}", "file": str(f), "start": start, "stop": stop,
                          "ord": ord_offset + start})
        ord_offset += n
    return parts


def build_chain(cfg: CurateConfig) -> StepChain:
    m = cfg.metadata
    steps: list[Step] = [UrlSafety(cfg.url_policy.policy()), CaptionLength(m.caption_min_chars, m.caption_max_chars)]
    if m.min_short_edge is not None:
        steps.append(MinShortEdge(m.min_short_edge, m.reject_missing_size))
    if m.max_aspect_ratio is not None:
        steps.append(MaxAspectRatio(m.max_aspect_ratio))
    if m.max_punsafe is not None:
        steps.append(ScoreThreshold("punsafe", max_value=m.max_punsafe))
    if m.max_pwatermark is not None:
        steps.append(ScoreThreshold("pwatermark", max_value=m.max_pwatermark))
    if m.min_similarity is not None:
        steps.append(ScoreThreshold("similarity", min_value=m.min_similarity))
    return StepChain(steps)


def _read_range(part: dict[str, Any]) -> pa.Table:
    pf = pq.ParquetFile(part["file"])
    start, stop = part["start"], part["stop"]
    groups, first_row, row = [], None, 0
    for i in range(pf.metadata.num_row_groups):
        n = pf.metadata.row_group(i).num_rows
        if row + n > start and row < stop:
            groups.append(i)
            first_row = row if first_row is None else first_row
        row += n
    if not groups:
        return pf.schema_arrow.empty_table()
    t = pf.read_row_groups(groups)
    return t.slice(start - first_row, stop - start)


def _with_identity(t: pa.Table, part: dict[str, Any]) -> pa.Table:
    n = t.num_rows
    sources = [f"{Path(part['file']).name}#{part['start'] + i}" for i in range(n)]
    norms: list[str | None] = []
    keys: list[str] = []
    for url, src in zip(t.column("url").to_pylist(), sources):
        try:
            norm = normalise_url(url) if url else None
        except ValueError:
            norm = None
        norms.append(norm)
        keys.append(key_for(norm if norm is not None else f"src:{src}"))
    return t.append_column("key", pa.array(keys, pa.string())) \
        .append_column("ord", pa.array(range(part["ord"], part["ord"] + n), pa.int64())) \
        .append_column("source", pa.array(sources, pa.string())) \
        .append_column("url_norm", pa.array(norms, pa.string()))


def _with_download_url(t: pa.Table) -> pa.Table:
    """Kept rows carry the normalised URL (ASCII host, as browsers send it): urllib cannot
    download a non-ASCII host, and it is the spelling dedup judged. Rejects keep the URL as
    written, so it can be found in the input."""
    url = pc.coalesce(t.column("url_norm"), t.column("url"))
    return t.set_column(t.schema.get_field_index("url"), "url", url)


def _unreadable(part: dict[str, Any], reason: str, detail: str, n: int) -> pa.Table:
    rows = [{"key": key_for(f"src:{Path(part['file']).name}#{part['start'] + i}"), "step": "read", "reason": reason,
             "detail": detail} for i in range(max(n, 1))]
    return make_rejects(rows, STAGE)


def filter_part(cfg: CurateConfig, folder: StageFolder, part: dict[str, Any]) -> PartEntry:
    """Pass 1 for one range: read, normalise columns, filter. All rows are kept in the work file
    with their reject marks; the URL dedup pass and the final write need both."""
    work = folder.work / "filtered"
    if "error" in part:
        rej = _unreadable(part, "unreadable_parquet", part["error"], 1)
        return PartEntry(part["part"], rej.num_rows, rej.num_rows, extra={"rejects_file": _write_work_rejects(folder, part, rej)})
    raw = _read_range(part)
    try:
        t = normalise(raw)
    except MissingColumnsError as err:
        rej = _unreadable(part, "missing_columns", str(err)[:300], raw.num_rows)
        return PartEntry(part["part"], rej.num_rows, rej.num_rows, extra={"rejects_file": _write_work_rejects(folder, part, rej)})
    t = _with_identity(t, part)
    kept, rejected, stats = build_chain(cfg)(t)
    # keep every row in the work file: reject marks travel with it
    everything = pa.concat_tables([ensure_reject_columns(kept), rejected], promote_options="permissive")
    everything = everything.append_column("part", pa.array([part["part"]] * everything.num_rows, pa.string()))
    everything = everything.append_column("bucket", bucket_of(everything.column("url_norm").to_pylist(),
                                                              cfg.metadata.dedup_buckets))
    write_parquet(work / f"part-{part['part']}.parquet", everything.sort_by("ord"))
    # the URL dedup pass only looks at rows that survived the filters
    urls = everything.filter(pc.is_null(everything.column("_reject_reason"))).select(
        ["ord", "key", "part", "url_norm", "bucket"])
    write_parquet(folder.work / "urls" / f"part-{part['part']}.parquet", urls)
    return PartEntry(part["part"], t.num_rows, rejected.num_rows, stats)


def _write_work_rejects(folder: StageFolder, part: dict[str, Any], rej: pa.Table) -> str:
    path = folder.work / "unreadable" / f"part-{part['part']}.parquet"
    write_parquet(path, rej)
    return str(path)


def finish_part(cfg: CurateConfig, folder: StageFolder, part: dict[str, Any], pass1: PartEntry,
                dups_dir: Path) -> PartEntry:
    """Pass 3 for one range: apply the URL dedup decisions and write the shard and rejects."""
    name = shard_name(int(part["part"]), "parquet")
    if "rejects_file" in pass1.extra:  # the whole range was unreadable
        rej = pq.read_table(pass1.extra["rejects_file"])
        stats = {"read": StepStats(rows_in=rej.num_rows, rows_out=0, rejects=Counter(rej.column("reason").to_pylist()))}
        return folder.commit(part["part"], rows_in=rej.num_rows, stats=stats, rejects=rej, inputs=[part["file"]],
                             name=name)
    t = pq.read_table(folder.work / "filtered" / f"part-{part['part']}.parquet")
    stats = dict(pass1.stats)
    if cfg.metadata.dedup_urls:
        t, stats["url_dedup"] = apply_dups(t, "url_dedup", dups_for_part(dups_dir, part["part"]))
    mask = pc.is_valid(t.column("_reject_reason"))
    kept = _with_download_url(t.filter(pc.invert(mask))).select(OUTPUT_COLUMNS).sort_by("ord")
    return folder.commit(part["part"], rows_in=t.num_rows, stats=stats, rejects=rejects_table(t.filter(mask), STAGE),
                         inputs=[part["file"]], name=name, table=kept if kept.num_rows else None)


def run(cfg: CurateConfig, out: Path, engine: Engine) -> dict[str, Any]:
    folder = StageFolder(out, STAGE)
    if folder.is_complete():
        return folder.stats()
    t0 = time.perf_counter()
    folder.prepare()
    parts = plan(cfg)
    by_id = {p["part"]: p for p in parts}
    pass1_folder = StageFolder(folder.work, "pass1")
    pass1 = run_parts(engine, pass1_folder, parts, lambda p: filter_part(cfg, folder, p),
                      num_cpus=0.5, desc="metadata: filter")
    dups_dir = folder.work / "url_dups"
    if cfg.metadata.dedup_urls and not dups_dir.exists():
        files = sorted((folder.work / "urls").glob("part-*.parquet"))
        run_exact(engine, files, "url_norm", "duplicate_url", dups_dir, desc="metadata: URL dedup")
    earlier = folder.entries()
    desc = "metadata: write shards"
    final = run_parts(engine, folder, parts, lambda p: finish_part(cfg, folder, by_id[p["part"]], pass1[p["part"]], dups_dir),
                      num_cpus=0.5, desc=desc)
    steps = engine_steps(engine, desc, [e for k, e in earlier.items() if k in by_id])
    return folder.finish(final.values(), None, time.perf_counter() - t0, {"engine": type(engine).__name__}, steps)


def engine_steps(engine: Engine, desc: str, earlier: list[PartEntry]) -> dict[str, StepStats] | None:
    """Step counts as the engine measured them (Beam metrics), plus parts finished by an
    earlier, interrupted run; None when the engine keeps no metrics of its own."""
    metrics = getattr(engine, "step_metrics", {}).get(desc)
    if metrics is None:
        return None
    steps = {name: StepStats(st.rows_in, st.rows_out, Counter(st.rejects), st.seconds) for name, st in metrics.items()}
    for e in earlier:
        merge_stats(steps, e.stats)
    return steps
