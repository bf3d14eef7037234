"""The contract of every model-backed step: declared resources, a setup that loads the model
once per worker, a batched call, a teardown. Engines run these as actor pools; tests call them
directly."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

Batch = dict[str, np.ndarray]


@dataclass(frozen=True)
class Resources:
    """What one worker of a model step asks the engine for."""

    num_cpus: float = 0.5  # fractional by default: whole-CPU actors can starve reads on small machines
    num_gpus: float = 0.0
    batch_size: int = 32
    concurrency: int = 1  # workers in the pool
    threads: int | None = None  # intra-op threads; None: max(1, round(num_cpus))

    def torch_threads(self) -> int:
        return self.threads or max(1, round(self.num_cpus))


class ModelStep:
    """Subclasses load in `setup` (never in __init__: the instance is pickled to the workers)
    and map a batch of columns to a batch of columns in `process`, row for row."""

    name = "model"
    resources = Resources()

    def check(self) -> None:
        """Before any work, on the driver: is the model there and of the right kind? Raise a
        clear error if not. Must not load the weights."""

    def setup(self) -> None:
        pass

    def process(self, batch: Batch) -> Batch:  # pragma: no cover - abstract
        raise NotImplementedError

    def teardown(self) -> None:
        pass

    def info(self) -> dict[str, Any]:
        """Model id, revision and settings, recorded with the outputs."""
        return {"name": self.name}


def seconds_column(name: str) -> str:
    """The column in which an engine reports a model step's seconds per row."""
    return f"_sec_{name}"


def run_locally(step: ModelStep, batches: list[Batch]) -> list[Batch]:
    """The bare loop: setup, every batch, teardown. Used by tests and benchmarks as the baseline."""
    step.setup()
    try:
        return [step.process(b) for b in batches]
    finally:
        step.teardown()


ChainItem = Any  # a ModelStep (run as an actor pool) or a plain Batch -> Batch callable (run as CPU tasks)


def run_chain_locally(stages: list[ChainItem], batches: list[Batch]) -> list[Batch]:
    """A chain of model steps and CPU callables, bare, in one process: the baseline the engine's
    pipeline is measured against, and what tests call."""
    models = [s for s in stages if isinstance(s, ModelStep)]
    for m in models:
        m.setup()
    try:
        out = []
        for b in batches:
            for s in stages:
                b = s.process(b) if isinstance(s, ModelStep) else s(b)
            out.append(b)
        return out
    finally:
        for m in models:
            m.teardown()
