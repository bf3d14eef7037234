"""The select build (DenseFusion's semantic selection): embed -> cluster -> select."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from fusionweave.experts.embedder import EmbedderError
from fusionweave.experts.expert import ExpertError
from fusionweave.pipelines.engine import Engine, ModelEngine
from fusionweave.pipelines.errors import BuildSetupError
from fusionweave.pipelines.pipeline_spec import Pipeline
from fusionweave.pipelines.runner import run_stage
from fusionweave.pipelines.select import choose, cluster, embed
from fusionweave.pipelines.select.config import SelectConfig
from fusionweave.pipelines.select.inputs import count_samples, plan_parts
from fusionweave.pipelines.upstream import input_paths

STAGES = (embed.STAGE, cluster.STAGE, choose.STAGE)
UPSTREAM = "validate"  # the curate build's final stage in the same build folder


def check(cfg: SelectConfig, out: Path) -> list[dict[str, Any]]:
    """Everything that can be known before any work: inputs exist, and k fits the input."""
    parts = plan_parts(input_paths(cfg.input, out, UPSTREAM, "select"))
    if not embed_done(out):
        try:
            embed.embedder(cfg.embed).check()
        except EmbedderError as err:
            raise BuildSetupError(f"select.embed.model: {err}") from None
        except ExpertError as err:  # open_clip: the message names its field
            raise BuildSetupError(str(err)) from None
    if cfg.cluster.clusters != "auto" and not embed_done(out):
        n = count_samples(parts)
        if cfg.cluster.clusters > n:
            raise cluster.ClusterError(f"select.cluster.clusters is {cfg.cluster.clusters} but the input holds only "
                                       f"{n} images; ask for at most {n} (or 'auto')")
    return parts


def embed_done(out: Path) -> bool:
    from fusionweave.pipelines.storage.build_folder import StageFolder

    return StageFolder(out, embed.STAGE).is_complete()


def run(cfg: SelectConfig, out: Path, engine: ModelEngine, stages: list[str] | None = None,
        stage_engines: dict[str, Engine] | None = None, checked: list[dict[str, Any]] | None = None
        ) -> dict[str, dict[str, Any]]:
    seed = cfg.seed or 0
    parts = checked if checked is not None else check(cfg, out)
    results: dict[str, dict[str, Any]] = {}
    if stages is None or embed.STAGE in stages:
        results[embed.STAGE] = run_stage(engine, out, embed.stage(cfg, out, parts))
    if stages is None or cluster.STAGE in stages:
        results[cluster.STAGE] = run_stage(engine, out, cluster.stage(cfg.cluster, out, engine, seed))
    if stages is None or choose.STAGE in stages:
        results[choose.STAGE] = run_stage(engine, out, choose.stage(cfg, out, engine, parts, seed))
    return results


PIPELINE = Pipeline("select", STAGES, run, check, upstream=UPSTREAM, input_field="select.input", final=choose.STAGE)
