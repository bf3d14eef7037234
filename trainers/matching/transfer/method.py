"""`fusionweave train unipt|sherl|full-finetune|linear-probe`: transfer of frozen (or, for the
full fine-tuning baseline, trained) backbones to image-text matching, on the training core.

The data, loss and metrics are the matching methods' (shards, one of 5 captions per image per
step, VSE++ with summed violations for `warmup_epochs`, R@K and rSum). Each epoch's line in
`metrics.jsonl` adds the memory the run took: `saved_bytes` (peak bytes saved for backward in a
step), `trainable_params`, `optimizer_state_bytes`, `cuda_max_allocated` (GPU runs) and
`sec_per_step`. `full-finetune` exports its backbones to `OUT/backbones/{text,image}`, so a
fine-tuned pair can be the frozen backbones of a later transfer.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch
from pydantic import Field

from fusionweave.pipelines.errors import BuildSetupError
from fusionweave.trainers.core.method import Method, StepContext
from fusionweave.trainers.matching.evaluate import coco_1k, recall, save_sims
from fusionweave.trainers.matching.method import Objective, sample_captions, train_loader
from fusionweave.trainers.matching.train import MatchingRecipe, media, pick_device, read_split
from fusionweave.trainers.matching.transfer.backbones import (ImageBackbone, ImageBackboneConfig, TextBackbone,
                                                              TextBackboneConfig, check_sources)
from fusionweave.trainers.matching.transfer.memory import OptimizerStateMeter, SavedTensorMeter
from fusionweave.trainers.matching.transfer.models import FullFinetune, LinearProbe, TransferModel
from fusionweave.trainers.matching.transfer.sherl import SHERL
from fusionweave.trainers.matching.transfer.unipt import UniPT
from fusionweave.trainers.stream import ResumableLoader

TRANSFER_METHODS = ("unipt", "sherl", "full-finetune", "linear-probe")
MIB = 2 ** 20


class TransferConfig(MatchingRecipe):
    """The originals' recipe by default: 25 epochs, lr 5e-4 (x0.1 at 15), batch 112."""
    text: TextBackboneConfig
    image: ImageBackboneConfig
    epochs: int = Field(25, gt=0)
    batch_size: int = Field(112, gt=1)
    lr: float = Field(5e-4, gt=0)
    embed_dim: int = Field(1024, gt=0, description="joint embedding size")
    side_dim: int = Field(512, gt=0, description="UniPT/SHERL side network width")
    gpo_dim: int = Field(32, gt=0, description="GPO positional encoding and GRU width")
    dropout: float = Field(0.1, ge=0, lt=1, description="SHERL text up-projection dropout")
    gate_temperature: float = Field(0.1, gt=0, description="SHERL gate tanh(theta / T)")
    backbone_lr: float = Field(0.1, gt=0, le=1, description="full-finetune: backbone lr as a share of lr")


def build(method: str, cfg: TransferConfig) -> TransferModel:
    text, image = TextBackbone(cfg.text), ImageBackbone(cfg.image)
    if method == "unipt":
        return UniPT(text, image, cfg.embed_dim, cfg.side_dim, cfg.gpo_dim)
    if method == "sherl":
        return SHERL(text, image, cfg.embed_dim, cfg.side_dim, cfg.gpo_dim, cfg.dropout, cfg.gate_temperature)
    if method == "full-finetune":
        return FullFinetune(text, image, cfg.embed_dim, cfg.gpo_dim)
    if method == "linear-probe":
        return LinearProbe(text, image, cfg.embed_dim, cfg.gpo_dim)
    raise ValueError(f"unknown transfer method {method!r}; choose from {TRANSFER_METHODS}")


@torch.no_grad()
def embed(net: TransferModel, images: torch.Tensor, captions: list[str], device: torch.device,
          block: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    was = net.training
    net.eval()
    img = torch.cat([net.encode_image(images[i:i + block].to(device)) for i in range(0, len(images), block)])
    txt = []
    for i in range(0, len(captions), block):
        ids, mask = net.text_backbone.tokenize(captions[i:i + block])
        txt.append(net.encode_text(ids.to(device), mask.to(device)))
    net.train(was)
    return img, torch.cat(txt)


def retrieval(net: TransferModel, images: torch.Tensor, captions: list[str], device: torch.device,
              protocol: str = "plain", sims_path: Path | None = None) -> dict[str, float]:
    img, txt = embed(net, images, captions, device)
    sims = (img @ txt.t()).cpu().numpy()
    if sims_path is not None:
        save_sims(sims_path, sims)
    return coco_1k(sims) if protocol == "coco1k" else recall(sims)


class TransferMethod(Method):
    metric = "rsum"

    def __init__(self, name: str, cfg: TransferConfig):
        if name not in TRANSFER_METHODS:
            raise ValueError(f"unknown transfer method {name!r}; choose from {TRANSFER_METHODS}")
        super().__init__(cfg.recipe())
        self.name, self.cfg = name, cfg
        self._test: tuple[torch.Tensor, list[str]] | None = None
        self._net: TransferModel | None = None
        self._opt_meter: OptimizerStateMeter | None = None
        self._exclude: list[torch.Tensor] | None = None
        self._saved_peak = 0
        self._step_start: float | None = None
        self._step_seconds: list[float] = []

    def prepare(self, out: Path) -> None:
        self._test = read_split(self.cfg.test)
        (out / "run.json").write_text(json.dumps({"method": self.name}))
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()

    def model(self) -> torch.nn.Module:
        self._net = build(self.name, self.cfg)
        return Objective(self._net, self.cfg.margin)

    def loader(self, rank: int, world: int) -> ResumableLoader:
        return train_loader(self.cfg, rank, world)

    def parameters(self, model: torch.nn.Module) -> list[Any]:
        """Trainable parameters; full fine-tuning puts the backbones in a group at `backbone_lr` x lr."""
        assert self._net is not None
        backbone = {id(p) for p in self._net.backbone_parameters()}
        own = [p for p in model.parameters() if p.requires_grad and id(p) not in backbone]
        tuned = [p for p in self._net.backbone_parameters() if p.requires_grad]
        self._opt_meter = OptimizerStateMeter([*own, *tuned])
        if not tuned:
            return own
        return [{"params": own}, {"params": tuned, "lr": self.cfg.lr * self.cfg.backbone_lr}]

    def loss(self, model: torch.nn.Module, batch: Any, ctx: StepContext) -> tuple[torch.Tensor, dict[str, float]]:
        assert self._net is not None
        if self._step_start is None:
            self._step_start = time.perf_counter()
        if self._exclude is None:  # the parameters as placed on the device
            self._exclude = list(model.parameters())
        ids, mask = self._net.text_backbone.tokenize(sample_captions(batch, self.cfg.seed, ctx))
        hardest = ctx.epoch >= self.cfg.warmup_epochs
        with SavedTensorMeter(self._exclude) as meter:
            loss = model(media(batch).to(ctx.device), ids.to(ctx.device), mask.to(ctx.device), hardest)
        self._saved_peak = max(self._saved_peak, meter.bytes)
        return loss, {"saved_mib": meter.bytes / MIB}

    def after_step(self, model: torch.nn.Module) -> None:
        if self._step_start is not None:
            self._step_seconds.append(time.perf_counter() - self._step_start)
            self._step_start = None

    def memory(self, model: torch.nn.Module, device: torch.device) -> dict[str, float]:
        out = {"saved_bytes": float(self._saved_peak),
               "trainable_params": float(sum(p.numel() for p in model.parameters() if p.requires_grad)),
               "backbone_params": float(sum(p.numel() for p in self._net.backbone_parameters())) if self._net else 0.0,
               "optimizer_state_bytes": float(self._opt_meter.bytes if self._opt_meter else 0),
               "sec_per_step": sum(self._step_seconds) / max(1, len(self._step_seconds))}
        if device.type == "cuda":
            out["cuda_max_allocated"] = float(torch.cuda.max_memory_allocated(device))
        self._saved_peak, self._step_seconds = 0, []
        return out

    def evaluate(self, model: torch.nn.Module, ctx: StepContext) -> dict[str, float]:
        assert self._test is not None
        net = model.net
        return {**retrieval(net, *self._test, ctx.device, self.cfg.protocol), **self.memory(model, ctx.device)}

    def save_best(self, model: torch.nn.Module, out: Path, metrics: dict[str, float]) -> None:
        torch.save({"model": model.net.state_dict(), "method": self.name, "family": "transfer",
                    "config": self.cfg.model_dump(mode="json"), "metrics": metrics}, out / "best.pt")

    def save_final(self, model: torch.nn.Module, out: Path) -> None:
        if self._opt_meter is not None:
            self._opt_meter.close()
        if self.name == "full-finetune":
            model.net.text_backbone.save(out / "backbones" / "text")
            model.net.image_backbone.save(out / "backbones" / "image")


def evaluate_checkpoint(ck: dict[str, Any], data: Path, protocol: str = "plain", sims_path: Path | None = None,
                        device: str = "auto") -> dict[str, float]:
    """A transfer run's best.pt (loaded) on a split: the backbones are rebuilt from the config's
    folders, then every weight, frozen ones included, comes from the checkpoint."""
    cfg = TransferConfig.model_validate(ck["config"])
    net = build(ck["method"], cfg)
    net.load_state_dict(ck["model"])
    dev = pick_device(device)
    images, caps = read_split(data)
    return retrieval(net.to(dev), images, caps, dev, protocol, sims_path)


def run(name: str, cfg: TransferConfig, out: Path, fit: Any) -> dict[str, Any]:
    if name not in TRANSFER_METHODS:
        raise BuildSetupError(f"unknown transfer method {name!r}; choose from {TRANSFER_METHODS}")
    for split in (cfg.train, cfg.test):
        if not Path(split).exists():
            raise BuildSetupError(f"no shards at {split} (make them with `fusionweave matching-data`)")
    check_sources(cfg.text, cfg.image)
    return fit(TransferMethod(name, cfg), out)
