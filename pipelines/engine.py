"""What a pipeline needs from an engine. Pipelines depend on this protocol, never on Ray or
Beam directly; orchestration passes in the engine that implements it."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator, Protocol

import pyarrow as pa


class Engine(Protocol):
    def map_partitions(self, items: list[dict[str, Any]], fn: Callable[[dict[str, Any]], dict[str, Any]], *,
                       num_cpus: float, desc: str) -> Iterator[dict[str, Any]]:
        """Run `fn` once per item, in parallel; yield results as they complete (any order)."""
        ...

    def group_apply(self, paths: list[Path], columns: list[str], group_col: str,
                    fn: Callable[[pa.Table], pa.Table], out_dir: Path, *, desc: str) -> None:
        """Read `columns` of the parquet `paths`, group rows by `group_col`, apply `fn` to each
        whole group and write what it returns as parquet files under `out_dir`."""
        ...
