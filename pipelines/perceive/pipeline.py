"""The perceive build: perception experts over selected (or curated) shards."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from fusionweave.experts.expert import Expert, ExpertError
from fusionweave.experts.resolve import ModelNotFound
from fusionweave.pipelines.engine import Engine, ModelEngine
from fusionweave.pipelines.errors import BuildSetupError
from fusionweave.pipelines.perceive import stage
from fusionweave.pipelines.perceive.chain import build_experts
from fusionweave.pipelines.perceive.config import PerceiveConfig
from fusionweave.pipelines.select.inputs import plan_parts
from fusionweave.pipelines.upstream import input_paths

STAGES: dict[str, Callable[..., dict[str, Any]]] = {stage.STAGE: stage.run}
UPSTREAM = "select"  # this build folder's selected set; anything else is named with --input


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
    parts = plan_parts(input_paths(cfg.input, out, UPSTREAM, "perceive"))
    experts_checked(cfg)
    return parts


def run(cfg: PerceiveConfig, out: Path, engine: ModelEngine, stages: list[str] | None = None,
        stage_engines: dict[str, Engine] | None = None) -> dict[str, dict[str, Any]]:
    parts = plan_parts(input_paths(cfg.input, out, UPSTREAM, "perceive"))
    return {stage.STAGE: stage.run(cfg, out, engine, parts, experts_checked(cfg))}
