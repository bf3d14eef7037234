"""DyTrack on the training core: pairs from the tracking shards, every exit supervised, AUC on
the validation sequences at each epoch end, the model saved to OUT/final (and OUT/best)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from fusionweave.trainers.core.method import Loader, Method, StepContext
from fusionweave.trainers.dytrack.config import DyTrackConfig, ModelConfig
from fusionweave.trainers.dytrack.data import pair_loader, read_sequences
from fusionweave.trainers.dytrack.losses import dytrack_loss
from fusionweave.trainers.dytrack.model import DyTrackNet

FINAL, BEST = "final", "best"
WEIGHTS, CONFIG = "model.pt", "dytrack.json"


def save_model(model: torch.nn.Module, folder: Path, cfg: DyTrackConfig, metrics: dict[str, float] | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), folder / WEIGHTS)
    (folder / CONFIG).write_text(json.dumps({"model": cfg.model.model_dump(), "track": cfg.track.model_dump(),
                                             "metrics": metrics or {}}, indent=1))


def load_model(folder: Path) -> tuple[DyTrackNet, dict[str, Any]]:
    """A saved tracker (OUT/final or OUT/best) and its saved settings."""
    from fusionweave.pipelines.errors import BuildSetupError

    if not (folder / WEIGHTS).is_file() or not (folder / CONFIG).is_file():
        raise BuildSetupError(f"--checkpoint {folder}: not a DyTrack model folder (needs {WEIGHTS} and {CONFIG}; "
                              "train one with `fusionweave train dytrack`, it writes OUT/final)")
    saved = json.loads((folder / CONFIG).read_text())
    net = DyTrackNet(ModelConfig.model_validate(saved["model"]))
    net.load_state_dict(torch.load(folder / WEIGHTS, map_location="cpu", weights_only=True))
    return net.eval(), saved


class DyTrackMethod(Method):
    name = "dytrack"

    def __init__(self, cfg: DyTrackConfig):
        super().__init__(cfg.recipe)
        self.cfg = cfg
        self.metric = "auc" if cfg.val else None  # best = the highest validation AUC
        self._val: list | None = None

    def prepare(self, out: Path) -> None:
        """The training and validation shards exist, before any model is built."""
        from fusionweave.pipelines.errors import BuildSetupError
        from fusionweave.trainers.shard_plan import ShardUnreadable, shard_files

        for field, paths in (("train", self.cfg.train), ("val", self.cfg.val or [])):
            if not paths:
                continue
            try:
                shard_files([str(p) for p in paths])
            except (FileNotFoundError, ShardUnreadable) as err:
                raise BuildSetupError(f"{field}: {err} (tracking shards: `fusionweave build tracking`)") from None

    def model(self) -> torch.nn.Module:
        if self.cfg.threads is not None:
            torch.set_num_threads(self.cfg.threads)
        return DyTrackNet(self.cfg.model)

    def loader(self, rank: int, world: int) -> Loader:
        return pair_loader(self.cfg, rank, world)

    def parameters(self, model: torch.nn.Module) -> list[Any]:
        """Two groups: the ViT backbone at lr x backbone_lr_scale (OSTrack's 0.1), the heads at lr."""
        backbone = [p for n, p in model.named_parameters() if p.requires_grad
                    and n.split(".")[0] in ("patch", "pos_t", "pos_s", "blocks")]
        ids = {id(p) for p in backbone}
        rest = [p for p in model.parameters() if p.requires_grad and id(p) not in ids]
        return [{"params": backbone, "lr": self.recipe.lr * self.cfg.backbone_lr_scale}, {"params": rest}]

    def loss(self, model: torch.nn.Module, batch: Any, ctx: StepContext) -> tuple[torch.Tensor, dict[str, float]]:
        if not batch:  # a window whose target was never visible: nothing to learn from
            return sum(p.sum() * 0 for p in model.parameters()), {}
        outs = model(batch["template"].to(ctx.device), batch["search"].to(ctx.device))
        return dytrack_loss(outs, batch["box"].to(ctx.device), self.cfg.loss)

    def evaluate(self, model: torch.nn.Module, ctx: StepContext) -> dict[str, float]:
        if not self.cfg.val:
            return {}
        from fusionweave.trainers.dytrack.evaluate import score
        from fusionweave.trainers.dytrack.track import track_sequence

        if self._val is None:
            self._val = read_sequences(self.cfg.val)
        was = model.training
        res = [track_sequence(model, s, self.cfg.track.thresholds, self.cfg.track, ctx.device) for s in self._val]
        model.train(was)
        names = [f"{s[0]['source']}/{s[0]['sequence']}" for s in self._val]
        sc = score(names, self._val, res, self.cfg.model.depth)
        return {k: sc[k] for k in ("auc", "precision_20", "norm_precision_20", "ao", "mean_depth")}

    def save_best(self, model: torch.nn.Module, out: Path, metrics: dict[str, float]) -> None:
        save_model(model, Path(out) / BEST, self.cfg, metrics)

    def save_final(self, model: torch.nn.Module, out: Path) -> None:
        save_model(model, Path(out) / FINAL, self.cfg)


def run(name: str, cfg: DyTrackConfig, out: Path, fit: Any) -> dict[str, Any]:
    """The `fusionweave train dytrack` entry (trainers/registry.py)."""
    return fit(DyTrackMethod(cfg), out)
