"""DyTrack's YAML config (configs/dytrack.yaml). Defaults are a CPU-sized model; the paper's
OSTrack base (ViT-B, 128/256 px crops, AdamW 4e-4, wd 1e-4, batch 128) is in the README."""
from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

from fusionweave.pipelines.config_base import Strict
from fusionweave.trainers.core.recipe import Recipe


class ModelConfig(Strict):
    dim: int = Field(64, gt=0)
    depth: int = Field(6, gt=0, le=48)
    heads: int = Field(4, gt=0)
    mlp_ratio: int = Field(2, gt=0)
    patch: int = Field(8, gt=0)
    template_size: int = Field(32, gt=0, description="template crop side (paper: 128)")
    search_size: int = Field(64, gt=0, description="search crop side (paper: 256)")
    template_factor: float = Field(2.0, gt=0, description="template crop side / sqrt(w*h) of the box")
    search_factor: float = Field(4.0, gt=0, description="search crop side / sqrt(w*h) of the box")
    exits: list[int] = Field([2, 4, 6], min_length=1, description="layers (1-based) followed by an exit; the "
                                                                 "last must be the last layer")
    head_dim: int = Field(64, gt=0)
    recycle: bool = Field(True, description="feature recycling: an exit's head sees the previous exit's features")

    @model_validator(mode="after")
    def _check(self) -> "ModelConfig":
        if sorted(set(self.exits)) != self.exits or self.exits[0] < 1 or self.exits[-1] != self.depth:
            raise ValueError(f"exits must be increasing layers in 1..{self.depth} ending at {self.depth}, "
                             f"got {self.exits}")
        if self.head_dim % 8:
            raise ValueError(f"head_dim {self.head_dim} is not a multiple of 8 (the head's GroupNorm groups)")
        if self.dim % self.heads:
            raise ValueError(f"dim {self.dim} is not divisible by heads {self.heads}")
        for side in (self.template_size, self.search_size):
            if side % self.patch:
                raise ValueError(f"crop side {side} is not a multiple of patch {self.patch}")
        return self


class LossConfig(Strict):
    focal: float = Field(1.0, ge=0)
    l1: float = Field(5.0, ge=0)
    giou: float = Field(2.0, ge=0)
    distill: float = Field(1.0, ge=0, description="target-aware self-distillation (early exits mimic the "
                                                  "deepest features inside the box)")
    exit_weights: list[float] | None = Field(None, description="per exit; default 1 each")
    heat_sigma: float = Field(1.0, gt=0, description="the target heatmap's Gaussian sigma in cells")


class SamplerConfig(Strict):
    window: int = Field(24, ge=2, description="consecutive frames of one sequence streamed together; pairs are "
                                              "drawn inside it")
    max_gap: int = Field(20, ge=1, description="largest template-search frame gap")
    pairs: int = Field(32, gt=0, description="pairs drawn from each window (the training batch)")
    center_jitter: float = Field(3.0, ge=0, description="search centre jitter x sqrt(w*h) (OSTrack: 3)")
    scale_jitter: float = Field(0.25, ge=0, description="search size jitter, log-normal sigma (OSTrack: 0.25)")
    template_center_jitter: float = Field(0.0, ge=0)
    template_scale_jitter: float = Field(0.0, ge=0)
    workers: int = Field(0, ge=0)


class TrackConfig(Strict):
    thresholds: list[float] = Field([0.5, 0.5], description="confidence to stop at each exit but the last")
    hann_window: bool = Field(True, description="weigh the heatmap by a Hann window at inference (OSTrack)")
    min_size: float = Field(4.0, gt=0, description="smallest box side kept when tracking, in pixels")
    size_lr: float = Field(0.1, gt=0, le=1, description="new box size = (1 - size_lr) x previous + size_lr x "
                                                        "predicted (OSTrack: 1, no damping)")


class DyTrackConfig(Strict):
    train: list[Path] = Field(min_length=1, description="tracking stage folders or shard files")
    val: list[Path] | None = Field(None, description="sequences tracked at each epoch end (AUC)")
    model: ModelConfig = ModelConfig()
    loss: LossConfig = LossConfig()
    sampler: SamplerConfig = SamplerConfig()
    track: TrackConfig = TrackConfig()
    recipe: Recipe = Recipe(epochs=30, lr=4e-4, weight_decay=1e-4, schedule="cosine")
    backbone_lr_scale: float = Field(0.1, gt=0, le=1, description="backbone lr x this (OSTrack: 0.1)")
    threads: int | None = Field(None, gt=0, description="torch CPU threads (default: torch's); 1 is fastest on a "
                                                        "shared CPU for the small default model")

    @model_validator(mode="after")
    def _check(self) -> "DyTrackConfig":
        n = len(self.model.exits)
        if len(self.track.thresholds) != n - 1:
            raise ValueError(f"track.thresholds: one per exit but the last ({n - 1}), got {len(self.track.thresholds)}")
        if self.loss.exit_weights is not None and len(self.loss.exit_weights) != n:
            raise ValueError(f"loss.exit_weights: one per exit ({n}), got {len(self.loss.exit_weights)}")
        return self
