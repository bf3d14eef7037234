"""`fusionweave train pathweave`: the MCL stages in OUT/stage<k>-<modality>, each starting from the
previous stage's final weights; then the continual report (OUT/continual.json, OUT/matrix.png).

A stage with `final/` and `eval.json` is done and skipped; an unfinished one is run again by the
core's `fit`, which resumes from its own checkpoint, so rerunning the command continues where it
stopped. Bad input is refused before any training, in one line (exit 2): no stage manifest, a
modality without an encoder, a stage without training shards, a stage without a step count."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from fusionweave.orchestration.config import ConfigError
from fusionweave.trainers.mcl_stages import Stage, load_stages
from fusionweave.trainers.pathweave.config import PathWeaveConfig
from fusionweave.trainers.pathweave.plan import stage_plans


def checked_stages(cfg: PathWeaveConfig) -> list[Stage]:
    try:
        stages = load_stages(cfg.build)
    except (FileNotFoundError, ValueError, KeyError) as err:
        raise ConfigError(f"build: {err}") from None
    if not stages:
        raise ConfigError(f"build: {cfg.build} has no stages in its stage manifest")
    for s in stages:
        if s.modality not in cfg.model.encoders:
            raise ConfigError(f"model.encoders: stage {s.index} is {s.modality}, which has no encoder in the config")
        if s.modality not in cfg.method.steps:
            raise ConfigError(f"method.steps: no step count for stage {s.index} ({s.modality})")
        if not [t for t in s.train if t["shards"] and t["ratio"] > 0]:
            raise ConfigError(f"build: stage {s.index} ({s.modality}) has no training samples "
                              f"(sources: {[t['source'] for t in s.train] or 'none'})")
    return stages


def train_pathweave(cfg: PathWeaveConfig, out: Path, fit: Callable[..., Any]) -> dict[str, Any]:
    stages = checked_stages(cfg)  # before torch is imported: a refusal costs no model loading
    from fusionweave.trainers.pathweave.method import EVAL, FINAL, TRAINABLE, PathWeaveStage, finished
    from fusionweave.trainers.pathweave.report import write_report

    plans = stage_plans(cfg.method.baseline, stages, cfg.method.steps)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    modalities = [s.modality for s in stages]
    matrix: list[list[float | None]] = []
    shares: dict[str, float] = {}
    init: Path | None = None
    for plan in plans:
        folder = out / plan.folder
        if not finished(folder):
            fit(PathWeaveStage(cfg, stages, plans, plan.index, init), folder)
            if not finished(folder):
                raise RuntimeError(f"stage {plan.index} ended without its final weights in {folder / FINAL}")
        scores = json.loads((folder / EVAL).read_text())["modalities"]
        matrix.append([scores.get(m) for m in modalities])
        shares[plan.label] = json.loads((folder / TRAINABLE).read_text())["trainable_share"]
        init = folder / FINAL
    report = write_report(out, cfg.method.baseline, [p.label for p in plans], modalities, matrix,
                          {"trainable_share": shares, "final": str(init)})
    return {k: report[k] for k in ("method", "matrix", "average", "mean_forgetting", "bwt", "mean_plasticity")}


def run(name: str, cfg: PathWeaveConfig, out: Path, fit: Callable[..., Any]) -> dict[str, Any]:
    """The `fusionweave train pathweave` entry (trainers/registry.py)."""
    return train_pathweave(cfg, out, fit)
