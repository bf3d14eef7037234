"""What a pipeline needs from an engine. Pipelines depend on this protocol, never on Ray or
Beam directly; orchestration passes in the engine that implements it."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Protocol, Sequence

import numpy as np
import pyarrow as pa

if TYPE_CHECKING:
    from fusionweave.experts.base import ChainItem, ModelStep

Batch = dict[str, np.ndarray]


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


class Shared(Protocol):
    """A read-only value every worker can get (Ray: one copy in the object store per node)."""

    def get(self) -> Any:
        ...


class ModelEngine(Engine, Protocol):
    """An engine that can also run model steps as pools of long-lived workers."""

    def map_with_model(self, items: list[dict[str, Any]], read: Callable[[dict[str, Any]], Iterator[Batch]],
                       step: "ModelStep | Sequence[ChainItem]", *, read_cpus: float, desc: str,
                       sink: Callable[[Batch], Batch] | None = None) -> Iterator[Batch]:
        """`read` turns each item into batches on CPU workers; `step` (set up once per worker,
        with the resources it declares) processes them; `sink`, on CPU workers too, takes each
        processed chunk and returns what the driver gets instead. Given a chain, each model step runs as
        its own pool and each plain callable between them as CPU tasks (`read_cpus` each). Yields the processed batches in any
        order. Rows sharing a `_chunk` value are always processed together, in one call."""
        ...

    def map_stream(self, items: Iterator[dict[str, Any]], fn: Callable[[dict[str, Any]], dict[str, Any]], *,
                   num_cpus: float, desc: str, workers: int = 0) -> Iterator[dict[str, Any]]:
        """`map_partitions` over items that arrive while it runs; results in completion order.
        `workers`: run them on that many long-lived workers started at once."""
        ...

    def share(self, value: Any) -> Shared:
        """Broadcast `value` to the workers."""
        ...
