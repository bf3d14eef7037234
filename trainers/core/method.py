"""What a training method gives the core. The core owns everything else: devices, precision,
distribution, accumulation, clipping, schedule, checkpoints, resume, metrics and progress.

The core calls, in order: `prepare(out)` (files the method needs before its model, e.g. a
vocabulary; it must be idempotent, as a resumed run calls it again), `model()`, `loader(rank,
world)`, then `loss()` per batch, `after_step()` per optimiser step, `evaluate()` at each epoch
end, `save_best()` when `metric` improved, and `save_final()` at the end.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Iterator, Protocol

import torch

from fusionweave.trainers.core.recipe import Recipe


class Loader(Protocol):
    """A resumable loader: `trainers.stream.ResumableLoader` or `Mixture` are ones."""

    def __iter__(self) -> Iterator[Any]: ...
    def __len__(self) -> int: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@dataclass(frozen=True)
class StepContext:
    epoch: int
    step: int  # optimiser steps taken so far
    device: torch.device
    rank: int
    world: int


class Method:
    name: ClassVar[str]
    metric: ClassVar[str | None] = None  # key of evaluate()'s result whose maximum is `best`

    def __init__(self, recipe: Recipe):
        self.recipe = recipe

    def prepare(self, out: Path) -> None:
        pass

    def model(self) -> torch.nn.Module:
        raise NotImplementedError

    def loader(self, rank: int, world: int) -> Loader:
        raise NotImplementedError

    def parameters(self, model: torch.nn.Module) -> list[torch.nn.Parameter]:
        """The parameters the optimiser updates (default: all with requires_grad)."""
        return [p for p in model.parameters() if p.requires_grad]

    def loss(self, model: torch.nn.Module, batch: Any, ctx: StepContext) -> tuple[torch.Tensor, dict[str, float]]:
        """Run `model(...)` (its forward, so DDP/FSDP synchronise gradients) on the batch, moved to
        `ctx.device`; return the loss to minimise and scalars to log."""
        raise NotImplementedError

    def after_step(self, model: torch.nn.Module) -> None:
        """After each optimiser step (`model` unwrapped), e.g. an EMA update."""

    def evaluate(self, model: torch.nn.Module, ctx: StepContext) -> dict[str, float]:
        """At each epoch end on the main process (`model` unwrapped); {} when the method has no eval."""
        return {}

    def save_best(self, model: torch.nn.Module, out: Path, metrics: dict[str, float]) -> None:
        pass

    def save_final(self, model: torch.nn.Module, out: Path) -> None:
        pass
