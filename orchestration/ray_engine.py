"""The Ray Data engine: an embedded local Ray by default, or an existing cluster.

One Ray session per process: `RayEngine.start` connects once and every stage reuses it.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pyarrow as pa

log = logging.getLogger(__name__)


class RayEngine:
    def __init__(self, address: str | None = None, num_cpus: int | None = None,
                 object_store_memory: int | None = None, progress: bool = True):
        self.address = address or os.environ.get("RAY_ADDRESS") or None
        self.num_cpus = num_cpus
        self.object_store_memory = object_store_memory
        self.progress = progress
        self._owns_session = False

    def start(self) -> "RayEngine":
        import ray

        if ray.is_initialized():
            return self
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": True,
                                  "configure_logging": True, "logging_level": logging.WARNING}
        if self.address:
            kwargs["address"] = self.address
        else:
            kwargs["num_cpus"] = self.num_cpus or os.cpu_count() or 2
            kwargs["object_store_memory"] = self.object_store_memory or 1 << 30
        ray.init(**kwargs)
        self._owns_session = True
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = self.progress
        ctx.print_on_execution_start = False
        return self

    def stop(self) -> None:
        import ray

        if self._owns_session and ray.is_initialized():
            ray.shutdown()
        self._owns_session = False

    def __enter__(self) -> "RayEngine":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def total_cpus(self) -> float:
        import ray

        return float(ray.cluster_resources().get("CPU", 1))

    def map_partitions(self, items: list[dict[str, Any]], fn: Callable[[dict[str, Any]], dict[str, Any]], *,
                       num_cpus: float, desc: str) -> Iterator[dict[str, Any]]:
        import ray

        if not items:
            return
        self.start()

        def run(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            out = [json.dumps(fn(json.loads(s))) for s in batch["item"]]
            return {"result": np.array(out, dtype=object)}

        ds = ray.data.from_items([{"item": json.dumps(i)} for i in items], override_num_blocks=len(items))
        # fractional CPUs: on a 2-core machine whole-CPU tasks can starve the reads forever
        ds = ds.map_batches(run, batch_size=1, num_cpus=num_cpus, batch_format="numpy", zero_copy_batch=False)
        for row in ds.iter_rows():
            yield json.loads(row["result"])

    def group_apply(self, paths: list[Path], columns: list[str], group_col: str,
                    fn: Callable[[pa.Table], pa.Table], out_dir: Path, *, desc: str) -> None:
        import ray

        self.start()
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp = out_dir.with_name(out_dir.name + ".tmp")
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        if paths:
            ds = ray.data.read_parquet([str(p) for p in paths], columns=columns)
            ds = ds.groupby(group_col).map_groups(fn, batch_format="pyarrow")
            ds.write_parquet(str(tmp))
        tmp.rename(out_dir)
