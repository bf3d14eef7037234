"""Chunks of a part on their way through a model chain, and where they wait for the part's finish.

Readers stream each part as chunks (`_part`, `_chunk`, and `_rows` = -1, except on a part's last
chunk where it is the number of rows the part sent). The model pool processes chunks in any
order; the last step's worker writes each processed chunk to the stage's work folder
(`ChunkSpill`) and hands the driver one small row per chunk. Once all of a part's chunks are on
disk a worker loads them for the part's finish (see `runner.run_model_parts`). So the driver
holds counts, never rows: no image bytes travel to it, and its memory does not grow with the parts.
"""
from __future__ import annotations

import hashlib
import shutil
from urllib.parse import quote
from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.feather as feather

from fusionweave.pipelines.storage.atomic import atomic_path
from fusionweave.pipelines.engine import Batch

PART, CHUNK, ROWS, SENT = "_part", "_chunk", "_rows", "_sent"


def chunk_columns(part: str, chunk: int, n: int, last_total: int | None) -> Batch:
    """The bookkeeping columns a reader adds to each chunk it yields."""
    rows = np.full(n, -1, np.int64)
    if last_total is not None and n:
        rows[-1] = last_total
    return {PART: np.array([part] * n, dtype=object), CHUNK: np.array([f"{part}:{chunk}"] * n, dtype=object),
            ROWS: rows}


def concat(batches: list[Batch]) -> Batch:
    return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]} if batches else {}


def to_arrow(batch: Batch) -> pa.Table:
    """Columns of a numpy batch as Arrow; an (N, D...) array becomes a fixed-size list column
    with its trailing shape in the field metadata, so `from_arrow` gives the same array back."""
    arrays, fields = [], []
    for name, col in batch.items():
        if col.ndim > 1:
            flat = pa.array(np.ascontiguousarray(col).reshape(-1))
            arr = pa.FixedSizeListArray.from_arrays(flat, int(np.prod(col.shape[1:])))
            meta = {b"shape": ",".join(map(str, col.shape[1:])).encode()}
        else:
            arr, meta = pa.array(col.tolist() if col.dtype == object else col), None
        arrays.append(arr)
        fields.append(pa.field(name, arr.type, metadata=meta))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def from_arrow(table: pa.Table) -> Batch:
    out: Batch = {}
    for field, col in zip(table.schema, table.columns):
        col = col.combine_chunks()
        if field.metadata and b"shape" in field.metadata:
            shape = tuple(int(s) for s in field.metadata[b"shape"].decode().split(","))
            out[field.name] = col.flatten().to_numpy(zero_copy_only=False).reshape(len(col), *shape)
        elif pa.types.is_string(col.type) or pa.types.is_binary(col.type) or pa.types.is_large_binary(col.type) \
                or pa.types.is_null(col.type):
            out[field.name] = np.array(col.to_pylist(), dtype=object)
        else:
            out[field.name] = col.to_numpy(zero_copy_only=False)
    return out


class ChunkSpill:
    """Writes processed chunks under the stage's work folder, in the worker that processed them,
    and loads a whole part back for its `finish` task. `drop` names columns `finish` does not need
    (e.g. image bytes it reads again from the input shard)."""

    def __init__(self, work: Path, drop: Sequence[str] = ()):
        self.root = Path(work) / "rows"
        self.drop = tuple(drop)

    def _dir(self, part: str) -> Path:
        return self.root / f"part-{quote(part, safe='')}"  # part ids may hold "/" (mcl: modality/split/...)

    def __call__(self, chunk: Batch) -> Batch:
        """One processed chunk -> its file; returns one row: part, chunk, rows sent, rows here."""
        part, name = str(chunk[PART][0]), "chunk-" + str(chunk[CHUNK][0]).rsplit(":", 1)[-1]
        # a pool may hand a chunk over in slices: each slice gets its own file, named by its rows
        name += "-" + hashlib.sha1("\n".join(map(str, chunk["key"])).encode()).hexdigest()[:12]
        rows = {k: v for k, v in chunk.items() if k not in self.drop and k not in (PART, CHUNK, ROWS)}
        with atomic_path(self._dir(part) / f"{name}.arrow") as tmp:
            feather.write_feather(to_arrow(rows), tmp, compression="uncompressed")
        return {PART: chunk[PART][:1], CHUNK: chunk[CHUNK][:1], ROWS: np.array([chunk[ROWS].max()]),
                SENT: np.array([len(chunk[PART])])}

    def load(self, part: str) -> Batch:
        files = sorted(self._dir(part).glob("*.arrow")) if self._dir(part).exists() else []
        return concat([from_arrow(feather.read_table(f)) for f in files])

    def clear(self, part: str) -> None:
        shutil.rmtree(self._dir(part), ignore_errors=True)
