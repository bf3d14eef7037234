"""The optimisation recipe a method hands the core: optimiser, schedule, precision, accumulation,
clipping, checkpoint cadence. Each method's config embeds one (`recipe:`) with its paper's values."""
from __future__ import annotations

import math
from typing import Literal

from pydantic import Field

from fusionweave.pipelines.config_base import Strict


class Recipe(Strict):
    epochs: int = Field(1, gt=0, le=10_000)
    lr: float = Field(1e-4, gt=0, le=10)
    weight_decay: float = Field(0.0, ge=0, le=10)
    optimizer: Literal["adamw", "adam"] = "adamw"
    betas: tuple[float, float] = (0.9, 0.999)
    schedule: Literal["cosine", "constant", "step"] = "cosine"
    warmup_ratio: float = Field(0.0, ge=0, lt=1, description="share of all optimiser steps spent warming up")
    step_epochs: int = Field(15, gt=0, le=10_000, description="schedule step: lr x step_gamma every this many epochs")
    step_gamma: float = Field(0.1, gt=0, le=1)
    grad_accum: int = Field(1, gt=0, le=4096, description="batches per optimiser step")
    grad_clip: float | None = Field(None, gt=0, le=1e6, description="max gradient norm; None: no clipping")
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    save_every: int = Field(0, ge=0, le=10**9, description="optimiser steps between checkpoints (0: each epoch end)")
    log_every: int = Field(1, gt=0, le=10**9, description="optimiser steps per metrics.jsonl line")
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"

    def lr_factor(self, step: int, steps_per_epoch: int, total_steps: int) -> float:
        """The multiplier of `lr` at optimiser step `step` (0-based)."""
        if self.schedule == "step":
            return self.step_gamma ** ((step // max(1, steps_per_epoch)) // self.step_epochs)
        warm = int(math.ceil(self.warmup_ratio * total_steps))
        if step < warm:
            return (step + 1) / warm
        if self.schedule == "constant":
            return 1.0
        done = (step - warm) / max(1, total_steps - warm)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, done)))
