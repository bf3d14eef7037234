"""Select, stage 1: image embeddings as a Parquet side table per input shard (key, idx,
embedding as unit-length float16), so the later stages and every rerun reuse them.

CPU tasks read, decode and resize (`ImagePreprocessor`); the embedder runs as an actor pool
with the resources it declares; a worker writes each part once all its rows are on disk
(see `runner.run_model_parts`).
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from fusionweave.experts.base import seconds_column
from fusionweave.experts.embedder import ImageEmbedder
from fusionweave.pipelines.storage.build_folder import StageFolder
from fusionweave.pipelines.engine import Batch
from fusionweave.pipelines.image_reader import image_part_reader, read_record
from fusionweave.pipelines.runner import ModelWork, PartResult, Stage
from fusionweave.pipelines.select.config import EmbedConfig, SelectConfig
from fusionweave.pipelines.storage.shard_sink import shard_name
from fusionweave.pipelines.storage.shard_source import READ_SHARD, ImageSample

STAGE = "embed"
STEP = "embed"


def embedder(cfg: EmbedConfig) -> ImageEmbedder:
    return ImageEmbedder(cfg.model, cfg.revision, cfg.resources(), cfg.dtype, backend=cfg.backend,
                         pretrained=cfg.pretrained)


@lru_cache(maxsize=4)
def _preprocessor(cfg: EmbedConfig) -> Any:
    return embedder(cfg).preprocessor()


def side_table(keys: list[str], idx: np.ndarray, emb: np.ndarray) -> pa.Table:
    """key, idx, embedding. The embedding is stored as raw little-endian float16 bytes in a
    fixed-size binary column (field metadata: dtype, dim): Parquet's own float16 type is written
    value by value and was 10x slower to write and read. `embeddings_of` reads it back."""
    emb = np.ascontiguousarray(emb, dtype="<f2")
    dim = emb.shape[1] if emb.ndim == 2 else 0
    col = pa.FixedSizeBinaryArray.from_buffers(pa.binary(2 * dim), len(keys), [None, pa.py_buffer(emb.tobytes())])
    field = pa.field("embedding", pa.binary(2 * dim), metadata={"dtype": "float16", "dim": str(dim)})
    schema = pa.schema([("key", pa.string()), ("idx", pa.int64()), field])
    return pa.table([pa.array(keys, pa.string()), pa.array(idx, pa.int64()), col], schema=schema)


def embeddings_of(table: pa.Table) -> np.ndarray:
    """(N, D) float16 of a side table's embedding column (zero-copy when it is one chunk)."""
    col = table.column("embedding")
    col = col.chunk(0) if col.num_chunks == 1 else col.combine_chunks()
    width = col.type.byte_width
    if len(col) == 0 or width == 0:
        return np.zeros((0, width // 2), np.float16)
    data = np.frombuffer(col.buffers()[1], dtype="<f2", count=len(col) * width // 2, offset=col.offset * width)
    return data.reshape(len(col), width // 2)


def make_reader(cfg: EmbedConfig, work: Path):  # noqa: ANN201 - a closure shipped to the workers
    def to_batch(items: list[ImageSample], bad: list[dict[str, Any]]) -> Batch | None:
        px, errors = _preprocessor(cfg)([s.members[s.image_ext] for s in items])
        ok = [s for s, e in zip(items, errors) if e is None]
        bad.extend({"key": s.key, "step": STEP, "reason": "undecodable", "detail": e, "url": s.meta.get("url")}
                   for s, e in zip(items, errors) if e is not None)
        if not ok:
            return None
        return {"key": np.array([s.key for s in ok], dtype=object),
                "idx": np.array([s.index for s in ok], np.int64), "pixels": px}

    return image_part_reader(work, STAGE, cfg.batch_size, to_batch)


def finish_part(work: Path, part: dict[str, Any], rows: Batch, cfg: EmbedConfig) -> PartResult:
    rec, rej = read_record(work, part["part"])
    n = len(rows.get("key", ()))
    if n != rec["sent"]:
        raise RuntimeError(f"embed part {part['part']}: {n} embeddings came back, {rec['sent']} were sent")
    order = np.argsort(rows["idx"]) if n else np.zeros(0, np.int64)
    emb = rows["embedding"][order] if n else np.zeros((0, embedder(cfg).dim()), np.float16)
    table = side_table([rows["key"][i] for i in order], rows["idx"][order] if n else np.zeros(0, np.int64), emb)
    sec = rows.get(seconds_column(ImageEmbedder.name))  # measured in the model's worker
    seconds = {READ_SHARD: rec["read_seconds"], STEP: float(sec.sum()) if sec is not None else 0.0}
    return PartResult(rec["rows_in"], [READ_SHARD, STEP], rej, seconds, table=table,
                      name=shard_name(int(part["part"]), "parquet"))


def stage(cfg: SelectConfig, out: Path, parts: list[dict[str, Any]]) -> Stage:
    work = StageFolder(out, STAGE).work
    step = embedder(cfg.embed)

    def finish(part: dict[str, Any], rows: Batch) -> PartResult:
        return finish_part(work, part, rows, cfg.embed)

    return Stage(STAGE, plan=lambda: parts, model=ModelWork(make_reader(cfg.embed, work), step, finish,
                                                              cfg.embed.read_cpus),
                 conclude=lambda _: {"embedder": step.info()}, desc="select: embed")
