"""The densefusion build (DenseFusion-1M's Perceptual Fusion): caption -> [teacher] -> export
[-> teacher_export]. Reads this build's perceive output, which must be complete, unless `input`
names other shards."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fusionweave.experts.captioners import Captioner, PriorsTemplateCaptioner, TransformersCaptioner
from fusionweave.experts.expert import ExpertError
from fusionweave.experts.openai_captioner import OpenAICaptioner
from fusionweave.experts.resolve import ModelNotFound
from fusionweave.pipelines.densefusion import caption, export
from fusionweave.pipelines.densefusion.config import CaptionerConfig, DenseFusionConfig
from fusionweave.pipelines.engine import Engine, ModelEngine
from fusionweave.pipelines.errors import BuildSetupError
from fusionweave.pipelines.pipeline_spec import Pipeline
from fusionweave.pipelines.runner import run_stage
from fusionweave.pipelines.storage import store
from fusionweave.pipelines.select.inputs import plan_parts
from fusionweave.pipelines.upstream import input_paths
from fusionweave.transforms.caption_qc import QcPolicy
from fusionweave.transforms.prompts import PromptError, Template

CAPTION, TEACHER, TEACHER_EXPORT = "caption", "teacher", "teacher_export"
STAGES = (CAPTION, TEACHER, export.STAGE, TEACHER_EXPORT)
UPSTREAM = "perceive"  # this build folder's priors; anything else is named with --input
FINAL = CAPTION  # the dataset's shards; the exports are files next to them


def enabled_stages(cfg: DenseFusionConfig) -> list[str]:
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
            if c is not None:
                c.check()
        except (ExpertError, ModelNotFound) as err:
            raise BuildSetupError(f"densefusion: {err}") from None
    return main, teacher


def record_captioners(out: Path, main: Captioner, teacher: Captioner | None) -> None:
    """build.json names the captioners, with a fine-tuned engine's checkpoint. A build resumed with
    another checkpoint at the same path would mix two engines' captions: refused."""
    path = out / "build.json"
    if not store.exists(path):
        return
    info = json.loads(store.read_text(path))
    now = {"caption": main.info(), **({"teacher": teacher.info()} if teacher is not None else {})}
    for stage, cap in (info.get("captioners") or {}).items():
        was = (cap.get("engine") or {}).get("checkpoint")
        new = (now.get(stage, {}).get("engine") or {}).get("checkpoint")
        if was != new:
            raise BuildSetupError(f"densefusion: the {stage} engine {cap.get('model')} is checkpoint {new}, but this "
                                  f"build began with {was}; captions of two engines would mix: use a new --out")
    info["captioners"] = now
    store.put_bytes(path, json.dumps(info, indent=2, sort_keys=True, default=str).encode())


def templates(cfg: DenseFusionConfig) -> tuple[Template, Template]:
    try:
        return Template.load(cfg.template, "engine"), Template.load(cfg.template, "teacher")
    except PromptError as err:
        raise BuildSetupError(f"densefusion.template: {err}") from None


@dataclass
class Checked:
    parts: list[dict[str, Any]]
    templates: tuple[Template, Template]  # the engine's, the teacher's
    captioners: tuple[Captioner, Captioner | None]  # the engine, the teacher


def check(cfg: DenseFusionConfig, out: Path) -> Checked:
    return Checked(plan_parts(input_paths(cfg.input, out, UPSTREAM, "densefusion")), templates(cfg),
                   captioners(cfg, out))


def run(cfg: DenseFusionConfig, out: Path, engine: ModelEngine, stages: list[str] | None = None,
        stage_engines: dict[str, Engine] | None = None, checked: Checked | None = None) -> dict[str, dict[str, Any]]:
    checked = checked if checked is not None else check(cfg, out)
    parts, (engine_t, teacher_t), (main, teacher) = checked.parts, checked.templates, checked.captioners
    policy = QcPolicy(**cfg.qc.model_dump())
    record_captioners(out, main, teacher)
    want = (lambda s: stages is None or s in stages)
    res: dict[str, dict[str, Any]] = {}
    if want(CAPTION):
        res[CAPTION] = run_stage(engine, out, caption.stage(CAPTION, out, parts, main, engine_t, cfg.token_budget,
                                                            policy, cfg.chunk_size, cfg.read_cpus))
    if teacher is not None and want(TEACHER):
        seed_set = caption.seed_keys(parts, cfg.teacher.n, cfg.seed or 0)
        res[TEACHER] = run_stage(engine, out, caption.stage(TEACHER, out, parts, teacher, teacher_t, cfg.token_budget,
                                                            policy, cfg.chunk_size, cfg.read_cpus, wanted=seed_set,
                                                            sft_template=engine_t))
    if want(export.STAGE):
        res[export.STAGE] = run_stage(engine, out, export.stage(out, CAPTION, cfg.export.images))
    if teacher is not None and want(TEACHER_EXPORT):
        res[TEACHER_EXPORT] = run_stage(engine, out, export.stage(out, TEACHER, cfg.export.images, TEACHER_EXPORT,
                                                                  sft=True))
    return res


PIPELINE = Pipeline("densefusion", STAGES, run, check, upstream=UPSTREAM, input_field="densefusion.input", final=FINAL,
                    optional=enabled_stages,
                    switches=dict.fromkeys((TEACHER, TEACHER_EXPORT), "densefusion.teacher.enabled"))
