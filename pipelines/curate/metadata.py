"""Curate, stage 1: LAION parquet -> filtered, URL-deduplicated URL shards for download.

Three passes, each resumable: filter every input range (parallel), find duplicate URLs across
the whole input (grouped by URL hash), then write each range's final shard and its rejects.
Ranges are fixed by the input files and `rows_per_shard`, so a rerun cuts the same shards.
"""
from __future__ import annotations

import time
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fusionweave.pipelines.storage import store
from fusionweave.pipelines.storage.build_folder import PartEntry, StageFolder
from fusionweave.pipelines.storage.location import Loc, location
from fusionweave.pipelines.storage.published import published, published_files
from fusionweave.pipelines.curate.config import CurateConfig
from fusionweave.pipelines.engine import Engine
from fusionweave.pipelines.global_dedup import apply_dups, bucket_of, dups_for_part, run_exact
from fusionweave.pipelines.runner import PartResult, Stage, run_parts, run_stage
from fusionweave.pipelines.storage.shard_sink import (make_rejects, rejects_table, shard_name, write_parquet,
                                                      write_scratch_parquet)
from fusionweave.transforms.keys import key_for, keys_for
from fusionweave.transforms.laion_columns import MissingColumnsError, normalise
from fusionweave.transforms.metadata_filters import (METADATA_FILTERS, CaptionLength, MaxAspectRatio, MinShortEdge,
                                                     ScoreThreshold, UrlSafety)
from fusionweave.transforms.step import Step, StepChain, StepStats, concat_tables, ensure_reject_columns, merge_stats
from fusionweave.transforms.url_safety import normalise_urls

STAGE = "metadata"
READ, URL_DEDUP = "read", "url_dedup"
OUTPUT_COLUMNS = ["key", "ord", "url", "caption", "width", "height", "similarity", "punsafe", "pwatermark",
                  "license", "sample_id", "source"]


def input_files(paths: list[Loc]) -> list[Loc]:
    files: list[Loc] = []
    for p in map(location, paths):
        found = [rel for rel in store.files(p, recursive=True) if rel.endswith(".parquet")] if store.is_dir(p) else None
        # in path order, folder by folder (as pathlib sorts), so ordinals never depend on the store
        files.extend([p / rel for rel in sorted(found, key=lambda r: r.split("/"))] if found is not None else [p])
    return files


def plan(cfg: CurateConfig) -> list[dict[str, Any]]:
    """Row ranges of rows_per_shard over the inputs, in input order, with global ordinals."""
    parts: list[dict[str, Any]] = []
    ord_offset = 0
    size = cfg.metadata.rows_per_shard
    for f in input_files(cfg.metadata.input):
        try:
            n = store.parquet_file(f).metadata.num_rows
        except store.StorageError:
            raise  # the store failed, not the file: never a reject
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
    steps += [METADATA_FILTERS[name](value) for name, value in m.plugins.items() if value is not None]
    return StepChain(steps)


def _read_range(part: dict[str, Any]) -> pa.Table:
    pf = store.parquet_file(part["file"])
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
    """key, ord, source and url_norm, over whole columns (see `normalise_urls`)."""
    n = t.num_rows
    rows = pa.array(np.arange(part["start"], part["start"] + n, dtype=np.int64)).cast(pa.string())
    sources = pc.binary_join_element_wise(f"{location(part['file']).name}#", rows, "")
    norms = normalise_urls(t.column("url"))
    keys = keys_for(pc.coalesce(norms, pc.binary_join_element_wise("src:", sources, "")))
    return t.append_column("key", keys) \
        .append_column("ord", pa.array(np.arange(part["ord"], part["ord"] + n, dtype=np.int64))) \
        .append_column("source", sources) \
        .append_column("url_norm", norms)


def _with_download_url(t: pa.Table) -> pa.Table:
    """Kept rows carry the normalised URL (ASCII host, as browsers send it): urllib cannot
    download a non-ASCII host, and it is the spelling dedup judged. Rejects keep the URL as
    written, so it can be found in the input."""
    url = pc.coalesce(t.column("url_norm"), t.column("url"))
    return t.set_column(t.schema.get_field_index("url"), "url", url)


def _unreadable(part: dict[str, Any], reason: str, detail: str, n: int) -> pa.Table:
    rows = [{"key": key_for(f"src:{location(part['file']).name}#{part['start'] + i}"), "step": READ, "reason": reason,
             "detail": detail} for i in range(max(n, 1))]
    return make_rejects(rows, STAGE)


def filter_part(cfg: CurateConfig, chain: StepChain, folder: StageFolder, part: dict[str, Any]) -> PartResult:
    """Pass 1 for one range: read, normalise columns, filter. All rows are kept in the work file
    with their reject marks; the URL dedup pass and the final write need both."""
    if "error" in part:
        return _unreadable_result(folder, part, _unreadable(part, "unreadable_parquet", part["error"], 1))
    raw = _read_range(part)
    try:
        t = normalise(raw)
    except MissingColumnsError as err:
        return _unreadable_result(folder, part, _unreadable(part, "missing_columns", str(err)[:300], raw.num_rows))
    t = _with_identity(t, part)
    kept, rejected, stats = chain(t)
    # keep every row in the work file: reject marks travel with it
    everything = concat_tables([ensure_reject_columns(kept), rejected])
    write_scratch_parquet(folder.work / "filtered" / f"part-{part['part']}.parquet", everything.sort_by("ord"))
    # the URL dedup pass only looks at rows that survived the filters
    urls = kept.select(["ord", "key"]) \
        .append_column("part", pa.repeat(pa.scalar(part["part"], pa.string()), kept.num_rows)) \
        .append_column("url_norm", kept.column("url_norm")) \
        .append_column("bucket", bucket_of(kept.column("url_norm"), cfg.metadata.dedup_buckets))
    write_scratch_parquet(folder.work / "urls" / f"part-{part['part']}.parquet", urls)
    return PartResult(t.num_rows, [s.name for s in chain.steps], rejected, {k: v.seconds for k, v in stats.items()},
                      count=kept.num_rows, inputs=[part["file"]], keep_rejects=False)


def _unreadable_result(folder: StageFolder, part: dict[str, Any], rej: pa.Table) -> PartResult:
    path = folder.work / "unreadable" / f"part-{part['part']}.parquet"
    write_parquet(path, rej)
    return PartResult(rej.num_rows, [READ], rej, inputs=[part["file"]], keep_rejects=False,
                      extra={"rejects_file": str(path)})


def finish_part(cfg: CurateConfig, folder: StageFolder, part: dict[str, Any], pass1: PartEntry,
                dups: list[Loc]) -> PartResult:
    """Pass 3 for one range: apply the URL dedup decisions and write the shard and rejects."""
    name = shard_name(int(part["part"]), "parquet")
    if "rejects_file" in pass1.extra:  # the whole range was unreadable
        rej = store.read_parquet(pass1.extra["rejects_file"])
        return PartResult(rej.num_rows, [READ], rej, name=name, inputs=[part["file"]])
    t = store.read_parquet(folder.work / "filtered" / f"part-{part['part']}.parquet")
    seconds = {k: v.seconds for k, v in pass1.stats.items()}
    steps = list(pass1.stats)
    if cfg.metadata.dedup_urls:
        t0 = time.perf_counter()
        t = apply_dups(t, URL_DEDUP, dups_for_part(dups, part["part"]))
        steps.append(URL_DEDUP)
        seconds[URL_DEDUP] = time.perf_counter() - t0
    mask = pc.is_valid(t.column("_reject_reason"))
    kept = _with_download_url(t.filter(pc.invert(mask))).select(OUTPUT_COLUMNS).sort_by("ord")
    return PartResult(t.num_rows, steps, rejects_table(t.filter(mask), STAGE), seconds,
                      table=kept if kept.num_rows else None, name=name, inputs=[part["file"]])


def stage(cfg: CurateConfig, out: Loc, engine: Engine) -> Stage:
    folder = StageFolder(out, STAGE)
    parts = plan(cfg)
    by_id = {p["part"]: p for p in parts}
    pass1: dict[str, PartEntry] = {}
    dups_dir = folder.work / "url_dups"
    dups: list[Loc] = []  # the files of the URL dedup decisions, listed once they are published
    desc = "metadata: write shards"
    chain = build_chain(cfg)  # built here and shipped: a filter may come from a module the workers never import

    def prepare(folder: StageFolder) -> None:
        pass1.update(run_parts(engine, StageFolder(folder.work, "pass1"), parts, lambda p: filter_part(cfg, chain, folder, p),
                               num_cpus=0.5, desc="metadata: filter"))
        if cfg.metadata.dedup_urls:
            if published(dups_dir) is None:
                files = store.glob(folder.work / "urls", "part-*.parquet")
                run_exact(engine, files, "url_norm", "duplicate_url", dups_dir, desc="metadata: URL dedup")
            dups.extend(published_files(dups_dir))

    def engine_steps(entries: dict[str, PartEntry], earlier: set[str]) -> dict[str, StepStats] | None:
        """Step counts as the engine measured them (Beam metrics), plus parts finished by an
        earlier, interrupted run; None when the engine keeps no metrics of its own."""
        metrics = getattr(engine, "step_metrics", {}).get(desc)
        if metrics is None:
            return None
        steps = merge_stats({}, metrics)
        for k in sorted(earlier & set(entries)):
            merge_stats(steps, entries[k].stats)
        return steps

    return Stage(STAGE, plan=lambda: parts, work=lambda p: finish_part(cfg, folder, by_id[p["part"]], pass1[p["part"]],
                                                                       dups),
                 prepare=prepare, desc=desc, engine_steps=engine_steps,
                 conclude=lambda _: {"engine": type(engine).__name__})


def run(cfg: CurateConfig, out: Loc, engine: Engine) -> dict[str, Any]:
    return run_stage(engine, out, stage(cfg, out, engine))
