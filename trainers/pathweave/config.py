"""`fusionweave train pathweave`'s config: the MCL build, the frozen LLM and encoders, the bridge,
the adapters, the continual method (PathWeave or a baseline), steps per stage, evaluation and the
paper's recipe (warm-up to lr 1e-5, cosine to 0, weight decay 0.05)."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from fusionweave.pipelines.config_base import Strict
from fusionweave.trainers.core.recipe import Recipe

Modality = Literal["image", "video", "audio", "depth", "pointcloud"]


class EncoderConfig(Strict):
    kind: Literal["vision", "audio", "points"]
    model: str = Field(description="a local folder or a cached Hugging Face id (never downloaded silently)")
    revision: str | None = None


class BridgeConfig(Strict):
    hidden: int = Field(768, gt=0, le=65536)
    layers: int = Field(12, gt=0, le=256)
    heads: int = Field(12, gt=0, le=256)
    intermediate: int = Field(3072, gt=0, le=262144)
    queries: int = Field(32, gt=0, le=4096)
    cross_every: int = Field(2, gt=0, le=256, description="cross-attention in every n-th layer (BLIP-2: 2)")


class ModelConfig(Strict):
    llm: str = Field(description="a transformers causal LM (frozen), local folder or cached HF id")
    encoders: dict[Modality, EncoderConfig]
    bridge: BridgeConfig = BridgeConfig()
    bottleneck: int = Field(8, gt=0, le=4096,
                            description="uni-modal adapter bottleneck (the in-adapter is this square)")
    image_lr: float | None = Field(None, gt=0, le=10, description="lr of the image stage, which trains the bridge "
                                                                   "itself (default: recipe.lr)")


class MethodConfig(Strict):
    baseline: Literal["pathweave", "sequential-finetune", "joint"] = Field(
        "pathweave", description="pathweave; sequential-finetune: one shared adapter set re-trained each stage; "
                                 "joint: every modality at once after the image stage (the upper bound)")
    steps: dict[Modality, int] = Field(default_factory=lambda: {"image": 1000, "video": 15_000, "audio": 65_000,
                                                                "depth": 35_000, "pointcloud": 65_000},
                                       description="optimiser steps per stage (iteration-based mixtures)")
    batch_size: int = Field(8, gt=0, le=65536)
    max_length: int = Field(64, gt=1, le=65536, description="tokens of question + answer kept per sample")


class DecodeConfig(Strict):
    min_new_tokens: int = Field(1, ge=0, le=4096)
    max_new_tokens: int = Field(10, gt=0, le=4096)


class EvalConfig(Strict):
    batch_size: int = Field(32, gt=0, le=65536)
    num_beams: int = Field(5, gt=0, le=64)
    caption: DecodeConfig = DecodeConfig(min_new_tokens=8, max_new_tokens=30)
    answer: DecodeConfig = DecodeConfig()
    limit: int | None = Field(None, gt=0, description="at most this many samples per eval set")
    caption_prompt: str = "describe it briefly"
    cls_prompt: dict[str, str] = Field(default_factory=dict, description="modality -> question for class-label eval "
                                                                         "sets (default: `what is it?`)")


def _paper_recipe() -> Recipe:
    # warm-up 1,000 of 15k-65k steps to 1e-5, cosine to 0, wd 0.05 (the per-stage share: warmup_ratio)
    return Recipe(epochs=1, lr=1e-5, weight_decay=0.05, schedule="cosine", warmup_ratio=0.03)


class PathWeaveConfig(Strict):
    build: Path = Field(description="a `fusionweave build mcl` folder (reads mcl_export/stages.json)")
    model: ModelConfig
    method: MethodConfig = MethodConfig()
    eval: EvalConfig = EvalConfig()
    recipe: Recipe = Field(default_factory=_paper_recipe)
    seed: int = 0
