"""Run a stage as independent parts with a manifest: the resume mechanism of every stage.

Each part writes its outputs atomically and deterministically; the driver appends the part's
manifest line only after they exist. A rerun skips parts with a line and redoes the rest, so a
kill at any moment ends, after the rerun, with exactly the uninterrupted result.
"""
from __future__ import annotations

import logging
from typing import Any, Callable

from tqdm import tqdm

from fusionweave.pipelines.build_folder import PartEntry, StageFolder
from fusionweave.pipelines.engine import Engine

log = logging.getLogger(__name__)


def run_parts(engine: Engine, folder: StageFolder, parts: list[dict[str, Any]],
              fn: Callable[[dict[str, Any]], PartEntry], *, num_cpus: float, desc: str,
              progress: bool = True) -> dict[str, PartEntry]:
    folder.prepare()
    done = folder.entries()
    wanted = {p["part"] for p in parts}
    done = {k: v for k, v in done.items() if k in wanted}
    todo = [p for p in parts if p["part"] not in done]
    if done:
        log.info("%s: %d of %d parts already done, resuming", desc, len(done), len(parts))
    with tqdm(total=len(parts), initial=len(done), desc=desc, unit="shard", disable=not progress,
              dynamic_ncols=True, leave=False) as bar:
        for entry in engine.map_partitions(todo, fn, num_cpus=num_cpus, desc=desc):
            folder.append(entry)
            done[entry.part] = entry
            bar.update(1)
    missing = wanted - set(done)
    if missing:
        raise RuntimeError(f"{desc}: parts {sorted(missing)[:5]} produced no result")
    return done
