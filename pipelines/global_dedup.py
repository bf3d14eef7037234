"""Dedup across the whole dataset, not per shard: side tables are grouped by an engine and the
pure rules of transforms/dedup.py run on each group."""
from __future__ import annotations

import zlib
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fusionweave.pipelines.engine import Engine
from fusionweave.pipelines.storage import store
from fusionweave.pipelines.storage.location import Loc
from fusionweave.transforms.step import reject
from fusionweave.transforms.dedup import DUP_SCHEMA, band_values, earliest_per_ord, exact_duplicates, near_duplicates

DUPS_WITH_PART = DUP_SCHEMA.append(pa.field("part", pa.string()))


def bucket_of(values: pa.Array | pa.ChunkedArray, buckets: int) -> pa.Array:
    """Stable hash bucket of each string (crc32 of its UTF-8 bytes, not Python's salted hash) so
    every run groups alike; null goes to bucket 0."""
    crc = np.array([zlib.crc32(b) if b is not None else 0 for b in values.cast(pa.binary()).to_pylist()], np.uint64)
    return pa.array((crc % np.uint64(buckets)).astype(np.int32))


def band_rows(ords: np.ndarray, keys: list[str], parts: list[str], hashes: np.ndarray, threshold: int) -> pa.Table:
    """One row per (sample, band): grouping on `band` brings every candidate pair together."""
    bands = band_values(hashes, threshold)
    n = len(ords)
    band_ids = [(np.uint64(b) << np.uint64(48)) | v for b, v in enumerate(bands)]
    return pa.table({
        "ord": pa.array(np.tile(ords, len(bands)), pa.int64()),
        "key": pa.array(keys * len(bands), pa.string()),
        "part": pa.array(parts * len(bands), pa.string()),
        "phash": pa.array(np.tile(hashes.astype(np.uint64), len(bands)), pa.uint64()),
        "band": pa.array(np.concatenate(band_ids) if n else np.array([], np.uint64), pa.uint64()),
    })


def _with_part(group: pa.Table, dups: pa.Table) -> pa.Table:
    at = pc.index_in(dups.column("ord"), value_set=group.column("ord").combine_chunks())
    return dups.append_column("part", group.column("part").combine_chunks().take(at))


def exact_group_fn(value_col: str, reason: str) -> Callable[[pa.Table], pa.Table]:
    def fn(group: pa.Table) -> pa.Table:
        return _with_part(group, exact_duplicates(group, value_col, reason))
    return fn


def near_group_fn(threshold: int, reason: str) -> Callable[[pa.Table], pa.Table]:
    def fn(group: pa.Table) -> pa.Table:
        return _with_part(group, near_duplicates(group, "phash", threshold, reason))
    return fn


def run_exact(engine: Engine, side_tables: list[Loc], value_col: str, reason: str, out_dir: Loc, desc: str) -> None:
    engine.group_apply(side_tables, ["ord", "key", "part", value_col, "bucket"], "bucket",
                       exact_group_fn(value_col, reason), out_dir, desc=desc)


def run_near(engine: Engine, band_tables: list[Loc], threshold: int, reason: str, out_dir: Loc, desc: str) -> None:
    engine.group_apply(band_tables, ["ord", "key", "part", "phash", "band"], "band",
                       near_group_fn(threshold, reason), out_dir, desc=desc)


def dups_for_part(files: list[Loc], part: str) -> pa.Table:
    """The decisions that concern one part, one row per ord (earliest kept row named), from the
    files of a published decisions folder (`published_files`, listed once by the driver)."""
    if not files:
        return DUP_SCHEMA.empty_table()
    t = pa.concat_tables(store.read_each(
        lambda f: store.read_parquet(f, schema=DUPS_WITH_PART, filters=pc.field("part") == part), files))
    return earliest_per_ord(t.drop_columns(["part"]).cast(DUP_SCHEMA))


def apply_dups(t: pa.Table, step: str, dups: pa.Table) -> pa.Table:
    """Mark the rows named in `dups` (by ord) as rejected by `step`. Rows rejected earlier keep
    their first reason (the runner counts each row once, under that reason)."""
    dups = dups.combine_chunks()
    at = pc.index_in(t.column("ord").combine_chunks(), value_set=dups.column("ord").chunk(0))  # null: no duplicate
    details = pc.binary_join_element_wise("duplicate of ", dups.column("dup_of").chunk(0).take(at), "")
    return reject(t, step, dups.column("reason").chunk(0).take(at), details)
