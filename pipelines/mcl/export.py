"""The mcl_export stage: the kept records written back in each source's original format (the
files the original loaders read: LAVIS JSON, AudioCaps/Clotho/Cap3D CSV, ...), COCO-format
caption ground truth for every caption eval set, and the continual-stage manifest. It reads the
records the mcl stage kept beside each shard (`_records/*.jsonl`), never the media again."""
from __future__ import annotations

import json
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from fusionweave.pipelines.atomic import write_bytes_atomic
from fusionweave.pipelines.build_folder import PartEntry, StageFolder
from fusionweave.pipelines.mcl.config import MclConfig
from fusionweave.pipelines.mcl.sources import SPECS
from fusionweave.pipelines.mcl.stage_manifest import STAGES_FILE, stage_manifest
from fusionweave.transforms.step import StepStats

STAGE = "mcl_export"


def read_records(stage_dir: Path, entry: PartEntry) -> list[dict[str, Any]]:
    """A part's kept records, from the small file the mcl stage wrote beside its shard."""
    lines = (stage_dir / entry.extra["records"]).read_text(encoding="utf-8").splitlines()
    return [{**json.loads(ln), "shard": entry.shard} for ln in lines]


def coco_ground_truth(records: list[dict[str, Any]]) -> dict[str, Any]:
    """pycocoevalcap's ground truth: integer image ids in key order; `key` ties each to its sample."""
    images, anns = [], []
    for i, r in enumerate(sorted(records, key=lambda r: r["key"])):
        images.append({"id": i, "file_name": r["media"], "key": r["key"]})
        for c in r["answers"]:
            anns.append({"image_id": i, "id": len(anns), "caption": c})
    return {"info": {"description": "fusionweave mcl caption ground truth"}, "licenses": [], "type": "captions",
            "images": images, "annotations": anns}


def write_exports(folder: StageFolder, cfg: MclConfig, records: list[dict[str, Any]]) -> list[str]:
    by_source: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        by_source[r["source"]].append(r)
    written = []
    sources = {s.name: s for s in cfg.sources}
    for name, recs in sorted(by_source.items()):
        src = sources[name]
        recs.sort(key=lambda r: r["key"])
        base = Path(recs[0]["modality"]) / recs[0]["split"] if recs[0]["domain"] == "in" \
            else Path(recs[0]["modality"]) / f"{recs[0]['split']}_ood"
        rows = [row for r in recs for row in r["rows"]]
        files = SPECS[src.format].export(src, rows)
        if recs[0]["task"] == "caption" and src.split != "train":
            files[f"{name}_coco_gt.json"] = json.dumps(coco_ground_truth(recs), ensure_ascii=False).encode()
        for fname, data in files.items():
            write_bytes_atomic(folder.dir / base / fname, data)
            written.append(str(base / fname))
    return written


def run(cfg: MclConfig, out: Path, source_stage: str) -> dict[str, Any]:
    folder = StageFolder(out, STAGE)
    if folder.is_complete():
        return folder.stats()
    t0 = time.perf_counter()
    folder.prepare()
    src = StageFolder(out, source_stage)
    entries, records = [], []
    for p, e in sorted(src.entries().items()):
        if not e.shard:
            continue
        t1 = time.perf_counter()
        recs = read_records(src.dir, e)
        records += recs
        n = len(recs)
        entries.append(PartEntry(p, n, 0, {"export": StepStats(n, n, seconds=time.perf_counter() - t1)},
                                 [e.extra["records"]], count=n))
    files = write_exports(folder, cfg, records)
    manifest = stage_manifest(cfg, records, f"{source_stage}/", f"{STAGE}/")
    write_bytes_atomic(folder.dir / STAGES_FILE, json.dumps(manifest, indent=1).encode())
    return folder.finish(entries, None, time.perf_counter() - t0,
                         info={"files": [*files, STAGES_FILE], "reads": source_stage})
