"""Reading image shards into chunks for a model pipeline, with every rejected sample recorded.

`image_part_reader` streams a part's ImageSamples as chunks (see `model_parts`); `to_batch`
turns a chunk's samples into columns, appending a reject row for any it cannot use. What was
read and rejected is written to the stage's work folder, where the driver's `finish` picks it up
with `read_record` once every row of the part has come back.
"""
from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.atomic import write_bytes_atomic
from pipelines.engine import Batch
from pipelines.model_parts import ROWS, chunk_columns
from pipelines.shard_sink import make_rejects, write_parquet
from pipelines.shard_source import ImageSample, iter_image_samples

ToBatch = Callable[[list[ImageSample], list[dict[str, Any]]], "Batch | None"]


def record_paths(work: Path, part: str) -> tuple[Path, Path]:
    return work / "read" / f"part-{part}.json", work / "read" / f"part-{part}.parquet"


def image_part_reader(work: Path, stage: str, chunk_size: int,
                      to_batch: ToBatch) -> Callable[[dict[str, Any]], Iterator[Batch]]:
    def read(part: dict[str, Any]) -> Iterator[Batch]:
        p = part["part"]
        bad: list[dict[str, Any]] = []
        sent = 0
        held: Batch | None = None
        chunk_no = 0

        def flush(items: list[ImageSample]) -> Iterator[Batch]:
            nonlocal held, sent, chunk_no
            b = to_batch(items, bad) if items else None
            if not b or not len(b["key"]):
                return
            if held is not None:
                yield held
            chunk_no += 1
            n = len(b["key"])
            sent += n
            b.update(chunk_columns(p, chunk_no, n, None))
            held = b  # held back one chunk: the last one carries the part's row count

        items: list[ImageSample] = []
        rows_in = 0
        t0 = time.perf_counter()
        for item in iter_image_samples(part["input"], part.get("expected")):
            rows_in += 1
            if isinstance(item, dict):
                bad.append(item)
                continue
            items.append(item)
            if len(items) == chunk_size:
                yield from flush(items)
                items = []
        yield from flush(items)
        meta_path, rej_path = record_paths(work, p)
        write_parquet(rej_path, make_rejects(bad, stage))
        counts = Counter((b["step"], b["reason"]) for b in bad)
        write_bytes_atomic(meta_path, json.dumps({
            "rows_in": rows_in, "sent": sent, "read_seconds": time.perf_counter() - t0,
            "rejects": [[st, r, n] for (st, r), n in sorted(counts.items())]}).encode())
        if held is not None:
            held[ROWS][-1] = sent
            yield held
    return read


def read_record(work: Path, part: str) -> tuple[dict[str, Any], pa.Table]:
    """What the reader of `part` recorded: {rows_in, sent, read_seconds, rejects} and the rejects."""
    meta_path, rej_path = record_paths(work, part)
    return json.loads(meta_path.read_text()), pq.read_table(rej_path)
