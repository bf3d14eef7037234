"""The perceive build: perception experts over selected (or curated) shards."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from fusionweave.experts.expert import Expert, ExpertError
from fusionweave.experts.resolve import ModelNotFound
from fusionweave.pipelines.build_folder import StageFolder
from fusionweave.pipelines.engine import Engine, ModelEngine
from fusionweave.pipelines.errors import BuildSetupError
from fusionweave.pipelines.perceive import stage
from fusionweave.pipelines.perceive.chain import build_experts
from fusionweave.pipelines.perceive.config import PerceiveConfig
from fusionweave.pipelines.select.inputs import plan_parts

STAGES: dict[str, Callable[..., dict[str, Any]]] = {stage.STAGE: stage.run}
DEFAULT_INPUTS = ("select", "validate")  # this build folder's select output, else curate's


def default_input(out: Path) -> Path:
    for name in DEFAULT_INPUTS:
        if StageFolder(out, name).is_complete():
            return Path(out) / name
    return Path(out) / DEFAULT_INPUTS[0]


def experts_checked(cfg: PerceiveConfig) -> list[Expert]:
    """Build every enabled expert and check its model is there and of the right kind, before work."""
    try:
        experts = build_experts(cfg)
        for e in experts:
            check = getattr(e, "check", None)
            if check is not None:
                check()
    except (ExpertError, ModelNotFound) as err:
        raise BuildSetupError(f"perceive: {err}") from None
    return experts


def check(cfg: PerceiveConfig, out: Path) -> list[dict[str, Any]]:
    parts = plan_parts(cfg.input or [default_input(out)])
    experts_checked(cfg)
    return parts


def run(cfg: PerceiveConfig, out: Path, engine: ModelEngine, stages: list[str] | None = None,
        stage_engines: dict[str, Engine] | None = None) -> dict[str, dict[str, Any]]:
    parts = plan_parts(cfg.input or [default_input(out)])
    return {stage.STAGE: stage.run(cfg, out, engine, parts, experts_checked(cfg))}
