"""Typed configuration of the densefusion pipeline (DenseFusion's Perceptual Fusion captioning)."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from fusionweave.pipelines.config_base import Strict, WorkerConfig
from fusionweave.transforms.caption_qc import Action
from fusionweave.transforms.prompts import DEFAULT_TEMPLATE
from fusionweave.pipelines.storage.location import StoragePath


class CaptionerConfig(WorkerConfig):
    kind: Literal["transformers", "openai", "priors-template"] = "priors-template"
    model: str = Field("", description="transformers: local folder or cached HF id; openai: the served model name")
    revision: str | None = None
    base_url: str | None = Field(None, description="openai: e.g. http://127.0.0.1:8000/v1 (vLLM, SGLang)")
    api_key_env: str | None = Field("OPENAI_API_KEY", description="environment variable holding the key")
    max_new_tokens: int = Field(512, gt=0)
    temperature: float = Field(0.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    requests: int = Field(8, gt=0, description="openai: concurrent requests per worker")
    timeout: float = Field(120.0, gt=0)
    retries: int = Field(4, ge=0)
    backoff: float = Field(1.0, ge=0, description="seconds, doubled per retry")
    rate_limit: float | None = Field(None, gt=0, description="openai: requests per second per worker")

    @model_validator(mode="after")
    def _complete(self) -> "CaptionerConfig":
        if self.kind in ("transformers", "openai") and not self.model:
            raise ValueError(f"model is required for the {self.kind} captioner")
        if self.kind == "openai" and not self.base_url:
            raise ValueError("base_url is required for the openai captioner")
        return self


class QcConfig(Strict):
    empty: Action = "reject"
    truncated: Action = "flag"
    repetition: Action = "reject"
    refusal: Action = "reject"
    leaked_boxes: Action = "reject"


class TeacherConfig(Strict):
    enabled: bool = False
    n: int = Field(100_000, gt=0, description="seed images (DenseFusion-4V-100K: 100,000)")
    captioner: CaptionerConfig = CaptionerConfig(kind="priors-template")


class ExportConfig(Strict):
    images: Literal["png", "original", "none"] = Field(
        "png", description="copies under export/images/NNNNNN/{image_id}.png as released (original: same bytes)")


class DenseFusionConfig(Strict):
    input: list[StoragePath] | None = Field(None, description="shards to caption; default: this build folder's `perceive` stage, which must be complete")
    seed: int | None = None
    template: Path = DEFAULT_TEMPLATE
    token_budget: int | None = Field(1024, gt=0, description="prompt tokens; priors are dropped to fit")
    chunk_size: int = Field(8, gt=0)
    read_cpus: float = Field(0.5, gt=0)
    trust_remote_code: bool = False
    captioner: CaptionerConfig = CaptionerConfig()
    teacher: TeacherConfig = TeacherConfig()
    qc: QcConfig = QcConfig()
    export: ExportConfig = ExportConfig()
