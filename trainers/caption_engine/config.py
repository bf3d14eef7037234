"""`fusionweave train caption-engine`'s config: the pivot model, the teacher SFT data, what trains
(vision tower frozen; projector + LLM fully or with LoRA) and the LLaVA-1.5 SFT recipe."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from fusionweave.pipelines.config_base import Strict
from fusionweave.trainers.core.recipe import Recipe

class EngineSetupError(ValueError):
    """The model, tokenizer or data cannot be trained as configured (one line, exit 2)."""


SFT_FILE, SFT_STAGE = "teacher_sft.json", "teacher_export"
LLM_PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


class DataConfig(Strict):
    sft: Path | None = Field(None, description="teacher_sft.json (LLaVA conversations) or a .jsonl of rows")
    image_root: Path | None = Field(None, description="the rows' `image` paths are relative to it (default: sft's folder)")
    build: Path | None = Field(None, description="a densefusion build folder: reads its teacher_export/teacher_sft.json")
    holdout: int = Field(0, ge=0, description="rows kept out of training (seeded), written to OUT/holdout.json for eval")
    batch_size: int = Field(4, gt=0, le=65536, description="samples per rank per batch")
    workers: int = Field(0, ge=0, le=256, description="DataLoader workers per rank")
    max_length: int = Field(2048, gt=8, le=1_048_576, description="tokens per sample, the image's included")

    @model_validator(mode="after")
    def _one_source(self) -> "DataConfig":
        if (self.sft is None) == (self.build is None):
            raise ValueError("give either data.sft (teacher_sft.json) or data.build (a densefusion build folder)")
        return self

    def sft_file(self) -> Path:
        return self.sft if self.sft is not None else Path(self.build) / SFT_STAGE / SFT_FILE  # type: ignore[arg-type]

    def root(self) -> Path:
        return self.image_root if self.image_root is not None else self.sft_file().parent


class LoraConfig(Strict):
    enabled: bool = False
    r: int = Field(128, gt=0, le=4096)
    alpha: int = Field(256, gt=0, le=65536)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] = Field(default_factory=lambda: list(LLM_PROJECTIONS),
                                      description="linear layer names inside the LLM (never the vision tower)")
    save: Literal["merged", "adapter"] = Field("merged", description="merged weights, or base + adapter")


def _llava_sft() -> Recipe:
    # LLaVA-1.5 finetune.sh: 1 epoch, lr 2e-5, wd 0, warm-up 0.03, cosine, bf16 (AdamW)
    return Recipe(epochs=1, lr=2e-5, weight_decay=0.0, schedule="cosine", warmup_ratio=0.03, mixed_precision="bf16")


class EngineConfig(Strict):
    model: str = Field(description="the pivot: a local folder or cached HF id of a transformers image-text-to-text model")
    revision: str | None = None
    data: DataConfig
    freeze_vision: bool = Field(True, description="LLaVA keeps the vision tower frozen")
    train_projector: bool = True
    train_llm: bool = Field(True, description="fully, or through LoRA when lora.enabled")
    lora: LoraConfig = LoraConfig()
    gradient_checkpointing: bool = False
    trust_remote_code: bool = False
    recipe: Recipe = _llava_sft()

    @model_validator(mode="before")
    @classmethod
    def _recipe_over_defaults(cls, data: object) -> object:
        """A recipe given in part keeps LLaVA's SFT values for the rest."""
        if isinstance(data, dict) and isinstance(data.get("recipe"), dict):
            data = {**data, "recipe": {**_llava_sft().model_dump(), **data["recipe"]}}
        return data

    @model_validator(mode="after")
    def _trains_something(self) -> "EngineConfig":
        if not (self.train_projector or self.train_llm or not self.freeze_vision):
            raise ValueError("nothing to train: set train_projector, train_llm or freeze_vision: false")
        if self.lora.enabled and not self.train_llm:
            raise ValueError("lora.enabled adapts the LLM; it needs train_llm: true")
        return self
