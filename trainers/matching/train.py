"""Training and evaluation of the matching methods from shards.

`fusionweave train METHOD --config FILE --out DIR`: METHOD is vse, gssf, sgr, saf, rcar or dbl.
Each epoch streams the train shards (one of each image's 5 captions per step, seeded), with the
VSE++ loss summing all violations for `warmup_epochs`, then hardest negatives. After each epoch
the dev/test split is evaluated (R@1/5/10 both ways, rSum); `checkpoint.pt` holds everything to
resume (model, optimiser, loader position, step, the best rSum so far: kept across a resume, which
the originals lose), `best.pt` the best model, `metrics.jsonl` one JSON line per epoch.
"""
from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field
from tqdm import tqdm

from fusionweave.pipelines.config_base import Strict
from fusionweave.trainers.matching.encoders import Vocab, contrastive_loss
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


class TrainConfig(Strict):
    train: Path
    test: Path
    protocol: Literal["plain", "coco1k", "coco5k"] = "plain"
    dim: int = Field(256, gt=0)
    sim_dim: int = Field(256, gt=0)
    word_dim: int = Field(300, gt=0)
    block: int = Field(16, ge=0, description="GSSF block size (0: diagonal only)")
    feat_dim: int | None = Field(None, description="region feature size (2048 for precomp); None: pixels")
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
    device: str = "auto"
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


def train(method: str, cfg: TrainConfig, out: Path, progress: bool = True) -> dict[str, Any]:
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {METHODS}")
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    device = pick_device(cfg.device)
    test_images, test_caps = read_split(cfg.test)
    ckpt_path = out / "checkpoint.pt"
    stream = ShardStream([cfg.train], cfg.batch_size, workers=cfg.workers, seed=cfg.seed,
                         shuffle_buffer=cfg.shuffle_buffer)
    loader = ResumableLoader(stream)
    if ckpt_path.exists():
        ck = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        vocab = Vocab(ck["vocab"])
    else:
        ck = None
        caps = [c for b in ResumableLoader(ShardStream([cfg.train], 1, shuffle_buffer=0)) for c in b["json"][0]["captions"]]
        vocab = Vocab.build(caps)
    vocab.save(out / "vocab.json")
    model = build_model(method, cfg, vocab).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=cfg.lr)
    sched = torch.optim.lr_scheduler.StepLR(opt, cfg.lr_decay_epochs, 0.1)
    state = {"epoch": 0, "step": 0, "best_rsum": -1.0}
    if ck is not None:
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        loader.load_state_dict(ck["loader"])
        state = ck["state"]
    log = (out / "metrics.jsonl").open("a")
    result: dict[str, Any] = {}
    while state["epoch"] < cfg.epochs:
        hardest = state["epoch"] >= cfg.warmup_epochs
        t0 = time.perf_counter()
        losses = []
        bar = tqdm(loader, total=len(loader), initial=loader.state_dict()["batches"], disable=not progress,
                   desc=f"{method} epoch {state['epoch']}", leave=False)
        for batch in bar:
            rng = random.Random(f"{cfg.seed}:{state['step']}")
            caps = [c[rng.randrange(len(c))] for c in (j["captions"] for j in batch["json"])]
            ids, lengths = vocab.encode(caps)
            images, ids, lengths = media(batch).to(device), ids.to(device), lengths.to(device)
            if isinstance(model, DBL):
                loss = model.loss(images, ids, lengths, cfg.margin, hardest)
            else:
                loss = contrastive_loss(model(images, ids, lengths), cfg.margin, hardest)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
            if isinstance(model, DBL):
                model.after_step()
            state["step"] += 1
            losses.append(float(loss))
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
        sched.step()
        state["epoch"] += 1
        metrics = evaluate(model, vocab, test_images, test_caps, device, cfg.protocol)
        best = metrics["rsum"] > state["best_rsum"]
        if best:
            state["best_rsum"] = metrics["rsum"]
            target = model.target if isinstance(model, DBL) else model
            torch.save({"model": target.state_dict(), "method": method, "config": cfg.model_dump(mode="json"),
                        "vocab": vocab.words[2:], "metrics": metrics}, out / "best.pt")
        result = {"epoch": state["epoch"], "step": state["step"], "loss": float(np.mean(losses)) if losses else None,
                  "seconds": round(time.perf_counter() - t0, 2), "best": best, "best_rsum": state["best_rsum"],
                  **{k: round(v, 2) for k, v in metrics.items()}}
        log.write(json.dumps(result) + "\n")
        log.flush()
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                    "loader": loader.state_dict(), "state": state, "vocab": vocab.words[2:]}, ckpt_path)
    log.close()
    return result


def evaluate_checkpoint(checkpoint: Path, data: Path, protocol: str = "plain", sims_path: Path | None = None,
                        device: str = "auto") -> dict[str, float]:
    ck = torch.load(checkpoint, map_location="cpu", weights_only=False)
    cfg = TrainConfig.model_validate(ck["config"])
    vocab = Vocab(ck["vocab"])
    head = cfg.dbl.head if ck["method"] == "dbl" else ck["method"]
    model = MatchingModel(head, len(vocab), cfg.dim, cfg.feat_dim, cfg.sim_dim, cfg.block, cfg.word_dim)
    model.load_state_dict(ck["model"])
    dev = pick_device(device)
    images, caps = read_split(data)
    return evaluate(model.to(dev), vocab, images, caps, dev, protocol, sims_path)
