"""The densefusion build (DenseFusion-1M's Perceptual Fusion): caption -> [teacher] -> export
[-> teacher_export]. Reads this build's perceive output (else select, else validate)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from fusionweave.experts.captioners import Captioner, PriorsTemplateCaptioner, TransformersCaptioner
from fusionweave.experts.expert import ExpertError
from fusionweave.experts.openai_captioner import OpenAICaptioner
from fusionweave.experts.resolve import ModelNotFound
from fusionweave.pipelines.densefusion import caption, export
from fusionweave.pipelines.densefusion.config import CaptionerConfig, DenseFusionConfig
from fusionweave.pipelines.engine import Engine, ModelEngine
from fusionweave.pipelines.errors import BuildSetupError
from fusionweave.pipelines.select.inputs import plan_parts
from fusionweave.pipelines.upstream import input_paths
from fusionweave.transforms.caption_qc import QcPolicy
from fusionweave.transforms.prompts import PromptError, Template

CAPTION, TEACHER, TEACHER_EXPORT = "caption", "teacher", "teacher_export"
STAGES: dict[str, Callable[..., Any]] = {CAPTION: caption.run, TEACHER: caption.run, export.STAGE: export.run,
                                         TEACHER_EXPORT: export.run}
UPSTREAM = "perceive"  # this build folder's priors; anything else is named with --input
FINAL = CAPTION  # the dataset's shards; the exports are files next to them


def stages_for(cfg: DenseFusionConfig) -> list[str]:
    return [s for s in STAGES if cfg.teacher.enabled or s not in (TEACHER, TEACHER_EXPORT)]


def make_captioner(c: CaptionerConfig, out: Path, trust_remote_code: bool, cache_name: str) -> Captioner:
    if c.kind == "priors-template":
        return PriorsTemplateCaptioner(c.resources())
    if c.kind == "transformers":
        return TransformersCaptioner(c.model, c.revision, c.resources(), c.max_new_tokens, c.temperature, c.top_p,
                                     c.dtype, trust_remote_code)
    return OpenAICaptioner(str(c.base_url), c.model, Path(out) / "_cache" / cache_name, c.resources(), c.api_key_env,
                           c.max_new_tokens, c.temperature, c.top_p, c.requests, c.timeout, c.retries, c.backoff,
                           c.rate_limit)


def captioners(cfg: DenseFusionConfig, out: Path) -> tuple[Captioner, Captioner | None]:
    main = make_captioner(cfg.captioner, out, cfg.trust_remote_code, "captions.sqlite")
    teacher = make_captioner(cfg.teacher.captioner, out, cfg.trust_remote_code, "teacher.sqlite") \
        if cfg.teacher.enabled else None
    for c in (main, teacher):
        try:
            if isinstance(c, TransformersCaptioner):
                c.check()
        except (ExpertError, ModelNotFound) as err:
            raise BuildSetupError(f"densefusion: {err}") from None
    return main, teacher


def templates(cfg: DenseFusionConfig) -> tuple[Template, Template]:
    try:
        return Template.load(cfg.template, "engine"), Template.load(cfg.template, "teacher")
    except PromptError as err:
        raise BuildSetupError(f"densefusion.template: {err}") from None


def check(cfg: DenseFusionConfig, out: Path) -> list[dict[str, Any]]:
    parts = plan_parts(input_paths(cfg.input, out, UPSTREAM, "densefusion"))
    templates(cfg)
    captioners(cfg, out)
    return parts


def run(cfg: DenseFusionConfig, out: Path, engine: ModelEngine, stages: list[str] | None = None,
        stage_engines: dict[str, Engine] | None = None) -> dict[str, dict[str, Any]]:
    parts = check(cfg, out)
    engine_t, teacher_t = templates(cfg)
    main, teacher = captioners(cfg, out)
    policy = QcPolicy(**cfg.qc.model_dump())
    want = (lambda s: stages is None or s in stages)
    res: dict[str, dict[str, Any]] = {}
    if want(CAPTION):
        res[CAPTION] = caption.run(CAPTION, out, engine, parts, main, engine_t, cfg.token_budget, policy,
                                   cfg.chunk_size, cfg.read_cpus)
    if teacher is not None and want(TEACHER):
        seed_set = caption.seed_keys(parts, cfg.teacher.n, cfg.seed or 0)
        res[TEACHER] = caption.run(TEACHER, out, engine, parts, teacher, teacher_t, cfg.token_budget, policy,
                                   cfg.chunk_size, cfg.read_cpus, wanted=seed_set, sft_template=engine_t)
    if want(export.STAGE):
        res[export.STAGE] = export.run(out, engine, CAPTION, cfg.export.images)
    if teacher is not None and want(TEACHER_EXPORT):
        res[TEACHER_EXPORT] = export.run(out, engine, TEACHER, cfg.export.images, TEACHER_EXPORT, sft=True)
    return res
