"""The mcl build: PathWeave's Continual Learning of Modality benchmark from the originals' files.

stage `mcl`: read every source -> records (malformed rows are rejects) -> missing media and
cross-split duplicates are rejects -> shards per modality/split/source with the originals'
preprocessing (the depth expert runs as an actor pool for the depth modality).
stage `mcl_export`: original-format exports, COCO caption ground truth, the stage manifest.
"""
from __future__ import annotations

import json
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pyarrow.parquet as pq

from fusionweave.experts.expert import ExpertError
from fusionweave.experts.resolve import ModelNotFound
from fusionweave.pipelines.atomic import write_bytes_atomic
from fusionweave.pipelines.build_folder import PartEntry, StageFolder
from fusionweave.pipelines.engine import Engine, ModelEngine
from fusionweave.pipelines.errors import BuildSetupError
from fusionweave.pipelines.mcl import depth_parts, export, hygiene
from fusionweave.pipelines.mcl.config import MclConfig
from fusionweave.pipelines.mcl.parts import build_summary, plan_parts
from fusionweave.pipelines.mcl.sources import SPECS, read_source
from fusionweave.pipelines.mcl.write import write_part
from fusionweave.pipelines.model_parts import run_model_parts
from fusionweave.pipelines.partitioned import run_parts
from fusionweave.pipelines.shard_sink import make_rejects
from fusionweave.transforms.mcl.record import Record
from fusionweave.transforms.step import StepStats

STAGE = "mcl"
STAGES = {STAGE: None, export.STAGE: None}
FINAL = STAGE
MISSING = "_missing_media.jsonl"
PLAN_PART = "_plan"


@dataclass
class Plan:
    records: list[Record]
    rejects: list[dict[str, Any]]
    stats: dict[str, StepStats]
    roots: dict[str, Path]


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
    expert = depth_parts.make_expert(cfg)
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
    stats = {"parse": StepStats(len(records) + len(rejects), len(records), Counter(r["reason"] for r in rejects))}
    records, rej = hygiene.missing_media(records, roots, cfg.follow_symlinks_outside_root)
    stats["media"] = StepStats(len(records) + len(rej), len(records), Counter(r["reason"] for r in rej))
    return Plan(records, rejects + rej, stats, roots)


def split_check(p: Plan, identity: Callable[[Record], str]) -> Plan:
    records, rej = hygiene.cross_split(p.records, identity)
    stats = {**p.stats, "splits": StepStats(len(p.records), len(records), Counter(r["reason"] for r in rej))}
    return Plan(records, p.rejects + rej, stats, p.roots)


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


_checked: dict[str, Plan] = {}  # config -> the plan `check` just made, taken once by `run`


def check(cfg: MclConfig, out: Path) -> Plan:
    p = plan(cfg)
    check_depth(cfg)
    _checked.clear()
    _checked[cfg.model_dump_json()] = p
    return p


def resumed(p: Plan, folder: StageFolder, entry: PartEntry) -> Plan:
    """The plan a killed run had recorded: its rejects (cross-split ones included) are not
    recomputed, so a resume does not hash every file again."""
    gone = set(pq.read_table(folder.dir / entry.rejects, columns=["key"]).column("key").to_pylist()) \
        if entry.rejects else set()
    return Plan([r for r in p.records if r.key not in gone], p.rejects, p.stats, p.roots)


def plan_entry(folder: StageFolder, p: Plan) -> PartEntry:
    """The rows refused before any media was opened, as a manifest line without a shard."""
    missing = [r for r in p.rejects if r["reason"] == "missing_media"]
    write_bytes_atomic(folder.dir / MISSING, "".join(
        json.dumps({"key": r["key"], "source": r["source"], "path": r["path"]}) + "\n" for r in missing).encode())
    by_modality: dict[str, Counter] = defaultdict(Counter)
    for r in p.rejects:
        by_modality[r["modality"]][r["reason"]] += 1
    rows = [{k: r[k] for k in ("key", "step", "reason", "detail")} for r in p.rejects]
    return folder.commit(PLAN_PART, rows_in=len(rows), stats=p.stats, rejects=make_rejects(rows, STAGE),
                         rejects_name="plan", plan_rejects={m: dict(c) for m, c in by_modality.items()})


def build_shards(cfg: MclConfig, out: Path, engine: ModelEngine, p: Plan) -> dict[str, Any]:
    folder = StageFolder(out, STAGE)
    if folder.is_complete():
        return folder.stats()
    t0 = time.perf_counter()
    folder.prepare()
    done = folder.entries().get(PLAN_PART)
    if done is None:
        identity = content_identity(p, engine, cfg.read_cpus) if cfg.duplicates == "content" \
            else (lambda r: hygiene.real_path(r, p.roots))
        p = split_check(p, identity)
        folder.append(plan_entry(folder, p))
    else:
        p = resumed(p, folder, done)
    parts = plan_parts(p.records, p.roots, cfg.shard_size)
    plain = [x for x in parts if x["modality"] != "depth"]
    depth = [x for x in parts if x["modality"] == "depth"]
    entries = dict(run_parts(engine, folder, plain, lambda x: write_part(folder, cfg, x), num_cpus=cfg.read_cpus,
                             desc=STAGE))
    model_info = None
    if depth:
        expert = depth_parts.make_expert(cfg)
        model_info = expert.info()
        read = depth_parts.reader(cfg.depth.batch_size, cfg.depth.jpeg_quality)
        finish = depth_parts.finisher(folder, cfg, model_info)
        entries.update(run_model_parts(engine, folder, depth, read, depth_parts.chain(expert), finish,
                                       read_cpus=cfg.read_cpus, desc=f"{STAGE} depth"))
    entries[PLAN_PART] = folder.entries()[PLAN_PART]
    summary = build_summary(list(entries.values()))
    return folder.finish(entries.values(), None, time.perf_counter() - t0,
                         info={"mcl": summary, "depth_model": model_info, "files": [MISSING]})


def run(cfg: MclConfig, out: Path, engine: ModelEngine, stages: list[str] | None = None,
        stage_engines: dict[str, Engine] | None = None) -> dict[str, dict[str, Any]]:
    want = (lambda s: stages is None or s in stages)
    res: dict[str, dict[str, Any]] = {}
    if want(STAGE):
        p = _checked.pop(cfg.model_dump_json(), None) or check(cfg, out)  # the CLI checked it already
        _checked.clear()
        res[STAGE] = build_shards(cfg, out, engine, p)
    if want(export.STAGE):
        res[export.STAGE] = export.run(cfg, out, STAGE)
    return res
