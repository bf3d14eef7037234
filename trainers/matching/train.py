"""The matching methods' config, model construction and evaluation.

`fusionweave train METHOD --config FILE --out DIR`: METHOD is vse, gssf, sgr, saf, rcar or dbl;
the training itself runs on the core (`trainers/core/loop.py`) through `method.MatchingMethod`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field

from fusionweave.pipelines.config_base import Strict
from fusionweave.trainers.core.recipe import Recipe
from fusionweave.trainers.matching.encoders import Vocab
from fusionweave.trainers.matching.evaluate import coco_1k, recall, save_sims
from fusionweave.trainers.matching.model import DBL, MatchingModel
from fusionweave.trainers.stream import ResumableLoader, ShardStream

METHODS = ("vse", "gssf", "sgr", "saf", "rcar", "dbl")
IMAGE_KEYS = ("png", "jpg", "jpeg", "webp")


class DblConfig(Strict):
    head: Literal["vse", "gssf", "sgr", "saf", "rcar"] = "vse"
    anchor: Literal["joint", "ema", "frozen"] = "ema"
    anchor_checkpoint: Path | None = None
    boost: Literal["absolute", "relative"] = "relative"
    delta: float = Field(0.1, ge=0)
    weight: float = Field(1.0, ge=0)
    momentum: float = Field(0.9995, gt=0, lt=1)


class MatchingRecipe(Strict):
    """What every matching run shares: the splits, the protocol, and the originals' optimisation."""
    train: Path
    test: Path
    protocol: Literal["plain", "coco1k", "coco5k"] = "plain"
    epochs: int = Field(30, gt=0)
    batch_size: int = Field(128, gt=1)
    lr: float = Field(2e-4, gt=0)
    lr_decay_epochs: int = Field(15, gt=0)
    margin: float = Field(0.2, ge=0)
    warmup_epochs: int = Field(1, ge=0, description="sum all violations before hardest negatives")
    grad_clip: float = Field(2.0, gt=0)
    workers: int = Field(0, ge=0)
    shuffle_buffer: int = Field(2000, ge=0)
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    grad_accum: int = Field(1, gt=0, le=4096)
    save_every: int = Field(0, ge=0, description="optimiser steps between checkpoints (0: each epoch end)")

    def recipe(self) -> Recipe:
        """The originals' optimisation: Adam, lr x0.1 every `lr_decay_epochs`, gradient clipping."""
        return Recipe(epochs=self.epochs, lr=self.lr, optimizer="adam", schedule="step",
                      step_epochs=self.lr_decay_epochs, grad_clip=self.grad_clip, seed=self.seed, device=self.device,
                      mixed_precision=self.mixed_precision, grad_accum=self.grad_accum, save_every=self.save_every)


class TrainConfig(MatchingRecipe):
    dim: int = Field(256, gt=0)
    sim_dim: int = Field(256, gt=0)
    word_dim: int = Field(300, gt=0)
    block: int = Field(16, ge=0, description="GSSF block size (0: diagonal only)")
    feat_dim: int | None = Field(None, description="region feature size (2048 for precomp); None: pixels")
    dbl: DblConfig = DblConfig()


def pick_device(name: str) -> torch.device:
    return torch.device("cuda" if name == "auto" and torch.cuda.is_available() else ("cpu" if name == "auto" else name))


def media(batch: dict[str, Any]) -> torch.Tensor:
    if "regions.npy" in batch:
        return torch.as_tensor(np.stack(batch["regions.npy"]))
    for k in IMAGE_KEYS:
        if k in batch:
            return batch[k]
    raise KeyError(f"no image or regions.npy member in the batch ({sorted(batch)})")


def read_split(folder: Path) -> tuple[torch.Tensor, list[str]]:
    """A whole split in its stored order: images (or regions) and the 5 captions of each."""
    loader = ResumableLoader(ShardStream([folder], 1, shuffle_buffer=0))
    items = sorted(((b["json"][0]["order"], media(b)[0], b["json"][0]["captions"]) for b in loader),
                   key=lambda x: x[0])
    return torch.stack([m for _, m, _ in items]), [c for _, _, caps in items for c in caps]


def build_model(method: str, cfg: TrainConfig, vocab: Vocab) -> torch.nn.Module:
    head = cfg.dbl.head if method == "dbl" else method
    make = lambda: MatchingModel(head, len(vocab), cfg.dim, cfg.feat_dim, cfg.sim_dim, cfg.block, cfg.word_dim)  # noqa: E731
    if method != "dbl":
        return make()
    anchor = None
    if cfg.dbl.anchor == "frozen":
        if cfg.dbl.anchor_checkpoint is None:
            raise ValueError("dbl.anchor: frozen needs dbl.anchor_checkpoint (a best.pt of an earlier run)")
        anchor = make()
        anchor.load_state_dict(torch.load(cfg.dbl.anchor_checkpoint, map_location="cpu")["model"])
    return DBL(make(), anchor, cfg.dbl.anchor, cfg.dbl.boost, cfg.dbl.delta, cfg.dbl.weight, cfg.dbl.momentum)


@torch.no_grad()
def evaluate(model: torch.nn.Module, vocab: Vocab, images: torch.Tensor, captions: list[str], device: torch.device,
             protocol: str = "plain", sims_path: Path | None = None, block: int = 128) -> dict[str, float]:
    net = model.target if isinstance(model, DBL) else model
    net.eval()
    regions = torch.cat([net.image(images[i:i + block].to(device)) for i in range(0, len(images), block)])
    ids, lengths = vocab.encode(captions)
    words = torch.cat([net.text(ids[i:i + block].to(device), lengths[i:i + block].to(device))
                       for i in range(0, len(ids), block)])
    sims = net.sims(regions, words, lengths.to(device), block).cpu().numpy()
    net.train()
    if sims_path is not None:
        save_sims(sims_path, sims)
    if protocol == "coco1k":
        return coco_1k(sims)
    return recall(sims)


def evaluate_checkpoint(checkpoint: Path, data: Path, protocol: str = "plain", sims_path: Path | None = None,
                        device: str = "auto") -> dict[str, float]:
    ck = torch.load(checkpoint, map_location="cpu", weights_only=False)
    if ck.get("family") == "transfer":  # unipt, sherl and their baselines
        from fusionweave.trainers.matching.transfer.method import evaluate_checkpoint as transfer_eval

        return transfer_eval(ck, data, protocol, sims_path, device)
    cfg = TrainConfig.model_validate(ck["config"])
    vocab = Vocab(ck["vocab"])
    head = cfg.dbl.head if ck["method"] == "dbl" else ck["method"]
    model = MatchingModel(head, len(vocab), cfg.dim, cfg.feat_dim, cfg.sim_dim, cfg.block, cfg.word_dim)
    model.load_state_dict(ck["model"])
    dev = pick_device(device)
    images, caps = read_split(data)
    return evaluate(model.to(dev), vocab, images, caps, dev, protocol, sims_path)
