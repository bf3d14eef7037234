"""The mcl build: PathWeave's Continual Learning of Modality benchmark from the originals' files.

stage `mcl`: read every source -> records (malformed rows are rejects) -> missing media and
cross-split duplicates are rejects -> shards per modality/split/source with the originals'
preprocessing (the depth expert runs as an actor pool for the depth modality).
stage `mcl_export`: original-format exports, COCO caption ground truth, the stage manifest.
"""
from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pyarrow.parquet as pq

from fusionweave.experts.expert import ExpertError
from fusionweave.experts.resolve import ModelNotFound
from fusionweave.pipelines.storage.atomic import write_bytes_atomic
from fusionweave.pipelines.storage.build_folder import PartEntry, StageFolder
from fusionweave.pipelines.engine import Engine, ModelEngine
from fusionweave.pipelines.errors import BuildSetupError
from fusionweave.pipelines.mcl import depth, export, hygiene
from fusionweave.pipelines.mcl.config import MclConfig
from fusionweave.pipelines.mcl.plan import build_summary, plan_parts
from fusionweave.pipelines.mcl.sources import SPECS, read_source
from fusionweave.pipelines.mcl.write import write_part
from fusionweave.pipelines.pipeline_spec import Pipeline
from fusionweave.pipelines.runner import ModelWork, PartResult, Stage, account, commit_part, run_stage
from fusionweave.transforms.step import StepStats
from fusionweave.pipelines.storage.shard_sink import make_rejects
from fusionweave.transforms.mcl.record import Record

STAGE = "mcl"
STAGES = (STAGE, export.STAGE)
PLAN_STEPS = ("parse", "media", "splits")
FINAL = STAGE
MISSING = "_missing_media.jsonl"
PLAN_PART = "_plan"


@dataclass
class Plan:
    """The records that reach the shards, the rows refused before any media was opened (each
    naming its step: parse, media, splits) and every source's media root."""

    records: list[Record]
    rejects: list[dict[str, Any]]
    roots: dict[str, Path]

    @property
    def stats(self) -> dict[str, StepStats]:
        """The plan's steps counted as the runner counts them."""
        return account(len(self.records) + len(self.rejects), PLAN_STEPS,
                       Counter((r["step"], r["reason"]) for r in self.rejects), {})


def check_files(cfg: MclConfig) -> None:
    for i, s in enumerate(cfg.sources):
        for field in ("annotations", "questions", "answer_map", "labels"):
            p = getattr(s, field)
            if p is not None and not Path(p).is_file():
                raise BuildSetupError(f"mcl.sources[{i}] ({s.name}).{field}: file not found: {p}")
        if not Path(s.media_root).is_dir():
            raise BuildSetupError(f"mcl.sources[{i}] ({s.name}).media_root: not a folder: {s.media_root}")


def check_stages(cfg: MclConfig) -> None:
    by_name = {s.name: s for s in cfg.sources}
    for i, st in enumerate(cfg.stages):
        for name, ratio in (st.mixture or {}).items():
            src = by_name.get(name)
            if src is None:
                raise BuildSetupError(f"mcl.stages[{i}].mixture: no source named {name!r}")
            if SPECS[src.format].modality != st.modality or src.split != "train":
                raise BuildSetupError(f"mcl.stages[{i}].mixture: {name!r} is {SPECS[src.format].modality} "
                                      f"{src.split}, not {st.modality} train")
            if ratio <= 0:
                raise BuildSetupError(f"mcl.stages[{i}].mixture.{name}: ratios must be positive, got {ratio}")
        if st.mixture:
            left = sorted(s.name for s in cfg.sources if SPECS[s.format].modality == st.modality
                          and s.split == "train" and s.name not in st.mixture)
            if left:
                raise BuildSetupError(f"mcl.stages[{i}].mixture: no ratio for the {st.modality} training source(s) "
                                      f"{left} (drop a source from mcl.sources to leave it out)")
    staged = {st.modality for st in cfg.stages}
    unstaged = sorted({SPECS[s.format].modality for s in cfg.sources} - staged)
    if unstaged:
        raise BuildSetupError(f"mcl.stages: sources of {unstaged} belong to no stage")


def check_depth(cfg: MclConfig) -> dict[str, Any] | None:
    if not any(SPECS[s.format].modality == "depth" for s in cfg.sources):
        return None
    if not cfg.depth.model:
        raise BuildSetupError("mcl.depth.model: the depth sources need a depth estimator (a local folder or a "
                              "cached Hugging Face id, e.g. Intel/dpt-hybrid-midas)")
    expert = depth.make_expert(cfg)
    try:
        expert.check()
    except (ExpertError, ModelNotFound) as err:
        raise BuildSetupError(f"mcl.depth.model: {err}") from None
    return expert.info()


def plan(cfg: MclConfig) -> Plan:
    check_files(cfg)
    check_stages(cfg)
    roots = {s.name: Path(s.media_root) for s in cfg.sources}
    records, rejects = [], []
    for s in cfg.sources:
        recs, rej = read_source(s)
        records += recs
        modality = SPECS[s.format].modality
        rejects += [{**r, "modality": modality, "split": s.split} for r in rej]
    records, rej = hygiene.missing_media(records, roots, cfg.follow_symlinks_outside_root)
    return Plan(records, rejects + rej, roots)


def split_check(p: Plan, identity: Callable[[Record], str]) -> Plan:
    records, rej = hygiene.cross_split(p.records, identity)
    return Plan(records, p.rejects + rej, p.roots)


def content_identity(p: Plan, engine: Engine, cpus: float, chunk: int = 256) -> Callable[[Record], str]:
    """sha256 of every file that could leak between splits, hashed on the engine's workers."""
    paths = sorted({hygiene.real_path(r, p.roots) for r in hygiene.needs_identity(p.records)})
    items = [{"part": str(i), "paths": paths[i:i + chunk]} for i in range(0, len(paths), chunk)]
    digests: dict[str, str] = {}
    for res in engine.map_partitions(items, lambda it: {"part": it["part"], **hygiene.sha256_files(it["paths"])},
                                     num_cpus=cpus, desc=f"{STAGE} hash"):
        res.pop("part")
        digests.update(res)
    return lambda r: digests[hygiene.real_path(r, p.roots)]


def check(cfg: MclConfig, out: Path) -> tuple[Plan, dict[str, Any] | None]:
    """The plan, and the depth model's info (None without depth sources), before any work."""
    return plan(cfg), check_depth(cfg)


def resumed(p: Plan, folder: StageFolder, entry: PartEntry) -> Plan:
    """The plan a killed run had recorded: its rejects (cross-split ones included) are not
    recomputed, so a resume does not hash every file again."""
    gone = set(pq.read_table(folder.dir / entry.rejects, columns=["key"]).column("key").to_pylist()) \
        if entry.rejects else set()
    return Plan([r for r in p.records if r.key not in gone], p.rejects, p.roots)


def plan_result(folder: StageFolder, p: Plan) -> PartResult:
    """The rows refused before any media was opened, as a part without a shard; the records it
    hands on are counted in by the parts that write them."""
    missing = [r for r in p.rejects if r["reason"] == "missing_media"]
    write_bytes_atomic(folder.dir / MISSING, "".join(
        json.dumps({"key": r["key"], "source": r["source"], "path": r["path"]}) + "\n" for r in missing).encode())
    by_modality: dict[str, Counter] = defaultdict(Counter)
    for r in p.rejects:
        by_modality[r["modality"]][r["reason"]] += 1
    rows = [{k: r[k] for k in ("key", "step", "reason", "detail")} for r in p.rejects]
    return PartResult(len(rows) + len(p.records), PLAN_STEPS, make_rejects(rows, STAGE), handed_on=len(p.records),
                      rejects_name="plan", inputs=[], extra={"plan_rejects": {m: dict(c) for m, c in by_modality.items()}})


def stage(cfg: MclConfig, out: Path, engine: ModelEngine, checked: Plan, model_info: dict[str, Any] | None) -> Stage:
    folder = StageFolder(out, STAGE)
    planned: list[dict[str, Any]] = []

    def prepare(folder: StageFolder) -> dict[str, PartEntry]:
        done = folder.entries().get(PLAN_PART)
        p = checked
        if done is None:
            identity = content_identity(p, engine, cfg.read_cpus) if cfg.duplicates == "content" \
                else (lambda r: hygiene.real_path(r, p.roots))
            p = split_check(p, identity)
            done = commit_part(folder, {"part": PLAN_PART}, plan_result(folder, p))
        else:
            p = resumed(p, folder, done)
        planned.extend(plan_parts(p.records, p.roots, cfg.shard_size))
        return {PLAN_PART: done}

    expert = depth.make_expert(cfg) if model_info is not None else None
    model = ModelWork(depth.reader(cfg.depth.batch_size, cfg.depth.jpeg_quality), depth.chain(expert),
                      depth.finisher(folder, cfg, model_info), cfg.read_cpus,
                      takes=lambda x: x["modality"] == "depth", desc=f"{STAGE} depth") if expert is not None else None
    return Stage(STAGE, plan=lambda: planned, work=lambda x: write_part(folder, cfg, x), model=model, prepare=prepare,
                 cpus=cfg.read_cpus, conclude=lambda entries: {"mcl": build_summary(list(entries.values())),
                                                               "depth_model": model_info, "files": [MISSING]})


def run(cfg: MclConfig, out: Path, engine: ModelEngine, stages: list[str] | None = None,
        stage_engines: dict[str, Engine] | None = None,
        checked: tuple[Plan, dict[str, Any] | None] | None = None) -> dict[str, dict[str, Any]]:
    want = (lambda s: stages is None or s in stages)
    res: dict[str, dict[str, Any]] = {}
    if want(STAGE):
        res[STAGE] = run_stage(engine, out, stage(cfg, out, engine, *(checked or check(cfg, out))))
    if want(export.STAGE):
        res[export.STAGE] = run_stage(engine, out, export.stage(cfg, out, STAGE))
    return res


PIPELINE = Pipeline("mcl", STAGES, run, check, final=FINAL)
