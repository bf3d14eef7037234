"""The curate build: metadata -> download -> validate, or metadata -> validate with the download
fused into validate's first pass (`curate.download.keep_shards: false`, the default)."""
from __future__ import annotations

from typing import Any, Callable

from fusionweave.pipelines.curate import download, metadata, validate
from fusionweave.pipelines.curate.config import CurateConfig
from fusionweave.pipelines.engine import Engine
from fusionweave.pipelines.pipeline_spec import Pipeline
from fusionweave.pipelines.storage.location import Loc

STAGES: dict[str, Callable[[CurateConfig, Loc, Engine], dict[str, Any]]] = {
    metadata.STAGE: metadata.run,
    download.STAGE: download.run,
    validate.STAGE: validate.run,
}


def enabled_stages(cfg: CurateConfig) -> list[str]:
    return [s for s in STAGES if s != download.STAGE or cfg.download.keep_shards]


def run(cfg: CurateConfig, out: Loc, engine: Engine, stages: list[str] | None = None,
        stage_engines: dict[str, Engine] | None = None, checked: None = None) -> dict[str, dict[str, Any]]:
    """Run the stages in order; `stage_engines` may give a stage its own engine (the metadata
    stage on Beam, the rest on Ray)."""
    enabled = enabled_stages(cfg)
    results: dict[str, dict[str, Any]] = {}
    for name, fn in STAGES.items():
        if name in enabled and (stages is None or name in stages):
            results[name] = fn(cfg, out, (stage_engines or {}).get(name, engine))
    return results


PIPELINE = Pipeline("curate", tuple(STAGES), run, input_field="curate.metadata.input", final=validate.STAGE,
                    beam_stage=metadata.STAGE, object_storage=True, optional=enabled_stages,
                    switches={download.STAGE: "curate.download.keep_shards"})
