"""The caption engine's Method on the training core (trainers/core): LLaVA-style SFT of the
pivot on the teacher seed set. The core owns devices, precision, DDP/FSDP, accumulation,
schedule, checkpoints and exact resume; this file owns the model, the data and the loss."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from fusionweave.trainers.caption_engine import data as D
from fusionweave.trainers.caption_engine.config import EngineConfig, EngineSetupError
from fusionweave.trainers.caption_engine.model import build, image_token_id, load_processor, save_engine, share_trained
from fusionweave.trainers.core.method import Loader, Method, StepContext
from fusionweave.trainers.eve.data import loader_errors
from fusionweave.trainers.eve.method import on_device

ENGINE, HOLDOUT, REPORT = "engine", "holdout.json", "engine_report.json"


class CaptionEngineMethod(Method):
    name = "caption-engine"

    def __init__(self, cfg: EngineConfig):
        super().__init__(on_device(cfg.recipe))
        self.cfg = cfg
        self.processor = load_processor(cfg)
        sft = cfg.data.sft_file()
        if not sft.is_file():
            hint = " (run the densefusion build with teacher.enabled: true)" if cfg.data.build else ""
            raise EngineSetupError(f"teacher SFT file {sft} does not exist{hint}")
        self.train_rows, self.holdout_rows = D.split_rows(sft, cfg.data.root(), cfg.data.holdout, cfg.recipe.seed)
        self._loader: Any = None
        self._share: dict[str, float] = {}

    def prepare(self, out: Path) -> None:
        if self.holdout_rows:
            D.write_rows(self.holdout_rows, Path(out) / HOLDOUT)

    def model(self) -> torch.nn.Module:
        m = build(self.cfg)
        self._share = share_trained(m)
        self._image_id = image_token_id(m)
        return m.train()

    def loader(self, rank: int, world: int) -> Loader:
        d = self.cfg.data
        enc = D.EngineEncoder(self.processor, self._image_id, d.max_length)
        self._loader = D.engine_loader(self.train_rows, enc, self.processor.tokenizer.pad_token_id, d.batch_size, rank,
                                       world, d.workers, self.recipe.seed)
        return self._loader

    def loss(self, model: torch.nn.Module, batch: Any, ctx: StepContext) -> tuple[torch.Tensor, dict[str, float]]:
        b = D.to_device(batch, ctx.device)
        out = model(**b)
        # tokens/s counts what the model read; supervised tokens prove no sample trains at loss 0
        return out.loss, {"tokens": float(b["attention_mask"].sum()), "supervised": float((b["labels"] != -100).sum())}

    def rejects(self) -> dict[str, int]:
        return loader_errors(self._loader) if self._loader is not None else {}

    def save_final(self, model: torch.nn.Module, out: Path) -> None:
        out = Path(out)
        last = _jsonl(out / "metrics.jsonl")[-1:] or [{}]
        # the core's epoch line: the mean over all the epoch's batches, across a resume too
        record = {"run": str(out.resolve()), "step": last[0].get("step"), "epochs": last[0].get("epoch"),
                  "final_loss": last[0].get("loss"), "data": str(self.cfg.data.sft_file().resolve()),
                  "train_rows": len(self.train_rows), "holdout_rows": len(self.holdout_rows), **self._share}
        info = save_engine(model, self.processor, out / ENGINE, self.cfg, record)
        report = {"engine": str((out / ENGINE).resolve()), "checkpoint": info["checkpoint"], **record,
                  "rejects": self.rejects(), "holdout": str(out / HOLDOUT) if self.holdout_rows else None}
        (out / REPORT).write_text(json.dumps(report, indent=1))


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.is_file() else []


def run(name: str, cfg: EngineConfig, out: Path, fit: Any) -> dict[str, Any]:
    """The `fusionweave train caption-engine` entry (trainers/registry.py)."""
    from fusionweave.experts.resolve import ModelNotFound
    from fusionweave.pipelines.errors import BuildSetupError

    out = Path(out)
    try:
        fit(CaptionEngineMethod(cfg), out)
    except (EngineSetupError, ModelNotFound) as err:
        raise BuildSetupError(f"caption-engine: {err}") from None
    report = json.loads((out / REPORT).read_text())
    return {k: report[k] for k in ("engine", "checkpoint", "step", "final_loss", "trained_share", "rejects")}
