"""The matching methods (vse, gssf, sgr, saf, rcar, dbl) as a core `Method`.

Each epoch streams the train shards (one of each image's 5 captions per step, seeded by the step),
with the VSE++ loss summing all violations for `warmup_epochs`, then hardest negatives. After each
epoch the test split is evaluated (R@1/5/10 both ways, rSum); `best.pt` holds the best model, and
the best rSum is kept across a resume (the originals lose it).
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import torch

from fusionweave.pipelines.errors import BuildSetupError
from fusionweave.trainers.core.method import Method, StepContext
from fusionweave.trainers.matching.encoders import Vocab, contrastive_loss
from fusionweave.trainers.matching.model import DBL
from fusionweave.trainers.matching.train import (METHODS, MatchingRecipe, TrainConfig, build_model, evaluate, media,
                                                 read_split)
from fusionweave.trainers.stream import ResumableLoader, ShardStream


def train_loader(cfg: MatchingRecipe, rank: int, world: int) -> ResumableLoader:
    return ResumableLoader(ShardStream([cfg.train], cfg.batch_size, rank=rank, world_size=world, workers=cfg.workers,
                                       seed=cfg.seed, shuffle_buffer=cfg.shuffle_buffer))


def sample_captions(batch: Any, seed: int, ctx: StepContext) -> list[str]:
    """One of each image's 5 captions, drawn from a generator seeded by the step (and rank), so a
    resumed run draws the same ones."""
    rng = random.Random(f"{seed}:{ctx.step}" + (f":{ctx.rank}" if ctx.rank else ""))
    return [c[rng.randrange(len(c))] for c in (j["captions"] for j in batch["json"])]


class Objective(torch.nn.Module):
    """The loss as the module's forward, so that DDP sees the forward it synchronises on."""

    def __init__(self, net: torch.nn.Module, margin: float):
        super().__init__()
        self.net, self.margin = net, margin

    def forward(self, images: torch.Tensor, ids: torch.Tensor, lengths: torch.Tensor, hardest: bool) -> torch.Tensor:
        if isinstance(self.net, DBL):
            return self.net.loss(images, ids, lengths, self.margin, hardest)
        return contrastive_loss(self.net(images, ids, lengths), self.margin, hardest)


class MatchingMethod(Method):
    metric = "rsum"

    def __init__(self, name: str, cfg: TrainConfig):
        if name not in METHODS:
            raise ValueError(f"unknown method {name!r}; choose from {METHODS}")
        super().__init__(cfg.recipe())
        self.name, self.cfg = name, cfg
        self.vocab: Vocab | None = None
        self._test: tuple[torch.Tensor, list[str]] | None = None

    def prepare(self, out: Path) -> None:
        """The test split, and the vocabulary of the train captions (built once per run and read
        back on resume). In this order, before the model exists: each read draws from torch's RNG,
        so the model starts from the same weights as the originals' order of work gives."""
        self._test = read_split(self.cfg.test)
        path = out / "vocab.json"
        if path.exists():
            self.vocab = Vocab.load(path)
            return
        stream = ShardStream([self.cfg.train], 1, shuffle_buffer=0)
        self.vocab = Vocab.build([c for b in ResumableLoader(stream) for c in b["json"][0]["captions"]])
        self.vocab.save(path)

    def model(self) -> torch.nn.Module:
        assert self.vocab is not None
        return Objective(build_model(self.name, self.cfg, self.vocab), self.cfg.margin)

    def loader(self, rank: int, world: int) -> ResumableLoader:
        return train_loader(self.cfg, rank, world)

    def loss(self, model: torch.nn.Module, batch: Any, ctx: StepContext) -> tuple[torch.Tensor, dict[str, float]]:
        assert self.vocab is not None
        ids, lengths = self.vocab.encode(sample_captions(batch, self.cfg.seed, ctx))
        hardest = ctx.epoch >= self.cfg.warmup_epochs
        return model(media(batch).to(ctx.device), ids.to(ctx.device), lengths.to(ctx.device), hardest), {}

    def after_step(self, model: torch.nn.Module) -> None:
        if isinstance(model.net, DBL):
            model.net.after_step()

    def evaluate(self, model: torch.nn.Module, ctx: StepContext) -> dict[str, float]:
        assert self.vocab is not None and self._test is not None
        return evaluate(model.net, self.vocab, *self._test, ctx.device, self.cfg.protocol)

    def save_best(self, model: torch.nn.Module, out: Path, metrics: dict[str, float]) -> None:
        assert self.vocab is not None
        net = model.net.target if isinstance(model.net, DBL) else model.net
        torch.save({"model": net.state_dict(), "method": self.name, "config": self.cfg.model_dump(mode="json"),
                    "vocab": self.vocab.words[2:], "metrics": metrics}, out / "best.pt")


def run(name: str, cfg: TrainConfig, out: Path, fit: Any) -> dict[str, Any]:
    if name == "dbl" and cfg.dbl.anchor == "frozen" and cfg.dbl.anchor_checkpoint is None:
        raise BuildSetupError("dbl.anchor: frozen needs dbl.anchor_checkpoint (the best.pt of an earlier run)")
    for split in (cfg.train, cfg.test):
        if not Path(split).exists():
            raise BuildSetupError(f"no shards at {split} (make them with `fusionweave matching-data`)")
    return fit(MatchingMethod(name, cfg), out)
