"""Typed configuration of the select pipeline (DenseFusion's semantic selection).

Faithful defaults: k-means with 50,000 clusters, SemDeDup eps 0.4, the 20 images nearest to
each centroid. `clusters: auto` keeps the paper's ratio (500M images / 50,000 clusters, i.e.
10,000 per cluster) on smaller inputs, so a small input is not split into near-empty clusters.
"""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from fusionweave.pipelines.config_base import Strict, WorkerConfig
from fusionweave.pipelines.storage import store
from fusionweave.pipelines.storage.location import Loc, StoragePath

FAITHFUL_CLUSTERS = 50_000
IMAGES_PER_CLUSTER = 10_000


class EmbedConfig(WorkerConfig):
    backend: Literal["transformers", "open_clip"] = "transformers"
    model: str = Field(..., description="transformers: local folder or Hugging Face id in the local cache (CLIP or "
                                        "SigLIP); open_clip: a model name (EVA02-B-16, ...) or a model-config .json")
    revision: str | None = None
    pretrained: str = Field("", description="open_clip only: a local checkpoint file; empty: random weights")
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    batch_size: int = Field(64, gt=0)
    read_cpus: float = Field(0.5, gt=0, description="per decode/preprocess task")

    @model_validator(mode="after")
    def _pretrained_is_open_clip(self) -> "EmbedConfig":
        if self.pretrained and self.backend != "open_clip":
            raise ValueError("pretrained is for backend: open_clip (a transformers model names its folder in model)")
        return self


class ClusterConfig(Strict):
    clusters: Annotated[int, Field(ge=1)] | Literal["auto"] = "auto"
    train_sample: int = Field(1_000_000, gt=0, description="embeddings k-means is trained on (seeded sample)")
    niter: int = Field(20, gt=0)
    nredo: int = Field(1, gt=0, description="k-means restarts; the best objective is kept")
    use_gpu: Literal["auto", "never"] = "auto"
    # one task per CPU, faiss on one thread each: at 0.5, twice the worker processes start (each
    # importing faiss, pyarrow, fusionweave) for no more throughput on CPU-bound parts
    task_cpus: float = Field(1.0, gt=0)

    def resolve(self, n: int) -> int:
        if self.clusters == "auto":
            return max(1, min(FAITHFUL_CLUSTERS, n // IMAGES_PER_CLUSTER))
        return self.clusters


class SemDedupConfig(Strict):
    enabled: bool = True
    eps: float = Field(0.4, gt=0, lt=2, description="pairs with cosine similarity > 1 - eps are duplicates")
    # which member of a duplicate group is kept: the original keeps the one least similar to
    # its centroid ("farthest"); "nearest" keeps the most typical one; "random" is seeded
    keep: Literal["farthest", "nearest", "random"] = "farthest"
    block_size: int = Field(4096, gt=0, description="rows per block of the pairwise similarity matrix")
    report_eps: list[Annotated[float, Field(gt=0, lt=2)]] = [0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4]


class TopNConfig(Strict):
    n: int | None = Field(20, gt=0, description="images kept per cluster; null keeps every non-duplicate")
    rank: Literal["nearest", "farthest", "random"] = "nearest"


class SelectConfig(Strict):
    input: list[StoragePath] | None = Field(None, description="curated shards: a stage folder, a folder of .tar, or "
                                                       "tar files; default: this build folder's `validate` stage, which must be complete")
    seed: int | None = Field(None, description="default: the recipe's seed")
    embed: EmbedConfig
    cluster: ClusterConfig = ClusterConfig()
    semdedup: SemDedupConfig = SemDedupConfig()
    top_n: TopNConfig = TopNConfig()

    @field_validator("input")
    @classmethod
    def _inputs_exist(cls, v: list[Loc] | None) -> list[Loc] | None:
        if v is not None:
            missing = [str(p) for p in v if not store.exists(p)]
            if not v or missing:
                raise ValueError(f"input path does not exist: {', '.join(missing) or '(empty list)'}")
        return v
