"""Reading image shards into chunks for a model pipeline, with every rejected sample recorded.

`image_part_reader` streams a part's ImageSamples as chunks (see `chunks`); `to_batch`
turns a chunk's samples into columns, appending a reject row for any it cannot use. What was
read and rejected is written to the stage's work folder, where the part's `finish` (a worker
task, see `runner.run_model_parts`) picks it up with `read_record` once every row of the part is on disk.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from fusionweave.pipelines.storage.atomic import write_bytes_atomic
from fusionweave.pipelines.engine import Batch
from fusionweave.pipelines.chunks import ROWS, chunk_columns
from fusionweave.pipelines.storage.shard_sink import make_rejects, write_parquet
from fusionweave.pipelines.storage.shard_source import ImageSample, iter_image_samples

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
        write_bytes_atomic(meta_path, json.dumps({
            "rows_in": rows_in, "sent": sent, "read_seconds": time.perf_counter() - t0}).encode())
        if held is not None:
            held[ROWS][-1] = sent
            yield held
    return read


def read_record(work: Path, part: str) -> tuple[dict[str, Any], pa.Table]:
    """What the reader of `part` recorded: {rows_in, sent, read_seconds} and the rejects."""
    meta_path, rej_path = record_paths(work, part)
    return json.loads(meta_path.read_text()), pq.read_table(rej_path)


def gather(work: Path, stage: str, part: dict[str, Any],
           rows: Batch) -> tuple[dict[str, Any], pa.Table, Iterator[tuple[ImageSample, int]]]:
    """For a part's `finish`: the reader's record, its rejects, and the part's samples read again
    with the row of `rows` that came back for each (samples the reader rejected are skipped).
    Raises if rows went missing or the input changed under the stage."""
    p = part["part"]
    rec, rej = read_record(work, p)
    n = len(rows.get("key", ()))
    if n != rec["sent"]:
        raise RuntimeError(f"{stage} part {p}: {n} rows came back, {rec['sent']} were sent")

    def matched() -> Iterator[tuple[ImageSample, int]]:
        by_idx = {int(i): j for j, i in enumerate(rows["idx"])} if n else {}
        for item in iter_image_samples(part["input"], part.get("expected")):
            if isinstance(item, dict) or item.index not in by_idx:
                continue  # the reader recorded it as a reject
            j = by_idx.pop(item.index)
            if rows["key"][j] != item.key:
                raise RuntimeError(f"{stage} part {p}: sample {item.index} is {item.key!r}, the model saw "
                                   f"{rows['key'][j]!r}; the input changed during the stage")
            yield item, j
        if by_idx:
            raise RuntimeError(f"{stage} part {p}: {len(by_idx)} samples are missing from {part['input']}")
    return rec, rej, matched()
