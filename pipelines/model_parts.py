"""Run a stage's parts through a model step, keeping the per-part manifest resume of
`partitioned.run_parts`.

Readers stream each part as chunks (`_part`, `_chunk`, and `_rows` = -1, except on a part's last
chunk where it is the number of rows the part sent). The model pool processes chunks in any
order; the driver gathers each part's rows and, once all have come back, hands them to `finish`,
which writes the part's outputs and returns its manifest line. Only parts in flight are held.
"""
from __future__ import annotations

import logging
from collections import defaultdict
from typing import Any, Callable, Sequence

import numpy as np
from tqdm import tqdm

from fusionweave.experts.base import ModelStep, Stage
from fusionweave.pipelines.build_folder import StageFolder
from fusionweave.pipelines.engine import Batch, ModelEngine

log = logging.getLogger(__name__)

PART, CHUNK, ROWS = "_part", "_chunk", "_rows"


def chunk_columns(part: str, chunk: int, n: int, last_total: int | None) -> Batch:
    """The bookkeeping columns a reader adds to each chunk it yields."""
    rows = np.full(n, -1, np.int64)
    if last_total is not None and n:
        rows[-1] = last_total
    return {PART: np.array([part] * n, dtype=object), CHUNK: np.array([f"{part}:{chunk}"] * n, dtype=object),
            ROWS: rows}


def concat(batches: list[Batch]) -> Batch:
    return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]} if batches else {}


def run_model_parts(engine: ModelEngine, folder: StageFolder, parts: list[dict[str, Any]],
                    read: Callable[[dict[str, Any]], Any], step: "ModelStep | Sequence[Stage]",
                    finish: Callable[[dict[str, Any], Batch], dict[str, Any]], *, read_cpus: float, desc: str,
                    progress: bool = True) -> dict[str, dict[str, Any]]:
    folder.prepare()
    wanted = {p["part"]: p for p in parts}
    done = {k: v for k, v in folder.entries().items() if k in wanted}
    todo = [p for p in parts if p["part"] not in done]
    if done:
        log.info("%s: %d of %d parts already done, resuming", desc, len(done), len(parts))
    pending: dict[str, list[Batch]] = defaultdict(list)
    received: dict[str, int] = defaultdict(int)
    totals: dict[str, int] = {}

    def complete(p: str, bar: tqdm) -> None:
        entry = finish(wanted[p], concat(pending.pop(p, [])))
        folder.append(entry)
        done[p] = entry
        bar.update(1)

    with tqdm(total=len(parts), initial=len(done), desc=desc, unit="shard", disable=not progress,
              dynamic_ncols=True, leave=False) as bar:
        for batch in engine.map_with_model(todo, read, step, read_cpus=read_cpus, desc=desc):
            part_col = batch[PART]
            for p in dict.fromkeys(part_col):
                mask = part_col == p
                pending[p].append({k: v[mask] for k, v in batch.items() if k not in (PART, CHUNK)})
                received[p] += int(mask.sum())
                last = batch[ROWS][mask].max()
                if last >= 0:
                    totals[p] = int(last)
                if totals.get(p) == received[p]:
                    complete(p, bar)
        # parts that sent no rows at all (every sample rejected) finish here
        for p in [p["part"] for p in todo if p["part"] not in done]:
            if received.get(p, 0) != totals.get(p, 0):
                raise RuntimeError(f"{desc}: part {p} sent {received.get(p, 0)} rows, expected {totals.get(p)}")
            complete(p, bar)
    return done
