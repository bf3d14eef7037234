"""The perceive build: perception experts over selected (or curated) shards."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from fusionweave.experts.expert import Expert, ExpertError
from fusionweave.experts.resolve import ModelNotFound
from fusionweave.pipelines.engine import Engine, ModelEngine
from fusionweave.pipelines.errors import BuildSetupError
from fusionweave.pipelines.perceive import stage
from fusionweave.pipelines.perceive.chain import build_experts
from fusionweave.pipelines.perceive.config import PerceiveConfig
from fusionweave.pipelines.pipeline_spec import Pipeline
from fusionweave.pipelines.runner import run_stage
from fusionweave.pipelines.select.inputs import plan_parts
from fusionweave.pipelines.upstream import input_paths

STAGES = (stage.STAGE,)
UPSTREAM = "select"  # this build folder's selected set; anything else is named with --input


def experts_checked(cfg: PerceiveConfig) -> list[Expert]:
    """Build every enabled expert and check its model is there and of the right kind, before work."""
    try:
        experts = build_experts(cfg)
        for e in experts:
            e.check()
    except (ExpertError, ModelNotFound) as err:
        raise BuildSetupError(f"perceive: {err}") from None
    return experts


def check(cfg: PerceiveConfig, out: Path) -> tuple[list[dict[str, Any]], list[Expert]]:
    return plan_parts(input_paths(cfg.input, out, UPSTREAM, "perceive")), experts_checked(cfg)


def run(cfg: PerceiveConfig, out: Path, engine: ModelEngine, stages: list[str] | None = None,
        stage_engines: dict[str, Engine] | None = None,
        checked: tuple[list[dict[str, Any]], list[Expert]] | None = None) -> dict[str, dict[str, Any]]:
    parts, experts = checked if checked is not None else check(cfg, out)
    return {stage.STAGE: run_stage(engine, out, stage.stage(cfg, out, parts, experts))}


PIPELINE = Pipeline("perceive", STAGES, run, check, upstream=UPSTREAM, input_field="perceive.input",
                    final=stage.STAGE)
