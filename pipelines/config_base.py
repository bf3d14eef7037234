"""Config building blocks shared by the pipelines."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from fusionweave.experts.base import Resources


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WorkerConfig(Strict):
    """What a model step's worker pool declares to the engine."""

    batch_size: int = Field(8, gt=0)
    num_cpus: float = Field(0.5, gt=0, description="per model worker (fractional: whole CPUs can starve reads)")
    num_gpus: float = Field(0.0, ge=0)
    concurrency: int = Field(1, gt=0, description="model workers in the pool")
    threads: int | None = Field(None, gt=0, description="intra-op threads per worker")

    def resources(self) -> Resources:
        return Resources(num_cpus=self.num_cpus, num_gpus=self.num_gpus, batch_size=self.batch_size,
                         concurrency=self.concurrency, threads=self.threads)
