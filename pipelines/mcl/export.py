"""The mcl_export stage: the kept records written back in each source's original format (the
files the original loaders read: LAVIS JSON, AudioCaps/Clotho/Cap3D CSV, ...), COCO-format
caption ground truth for every caption eval set, and the continual-stage manifest. It reads the
records the mcl stage kept beside each shard (`_records/*.jsonl`), never the media again."""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from fusionweave.pipelines.storage.atomic import write_bytes_atomic
from fusionweave.pipelines.storage.build_folder import PartEntry, StageFolder
from fusionweave.pipelines.mcl.config import MclConfig
from fusionweave.pipelines.runner import PartResult, Stage
from fusionweave.pipelines.mcl.sources import SPECS
from fusionweave.pipelines.mcl.stage_manifest import STAGES_FILE, stage_manifest

STAGE = "mcl_export"


def read_records(stage_dir: Path, records: str, shard: str) -> list[dict[str, Any]]:
    """A part's kept records, from the small file the mcl stage wrote beside its shard."""
    lines = (stage_dir / records).read_text(encoding="utf-8").splitlines()
    return [{**json.loads(ln), "shard": shard} for ln in lines]


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


def stage(cfg: MclConfig, out: Path, source_stage: str) -> Stage:
    folder, src = StageFolder(out, STAGE), StageFolder(out, source_stage)

    parts: list[dict[str, Any]] = []

    def plan() -> list[dict[str, Any]]:
        parts.extend({"part": p, "records": e.extra["records"], "shard": e.shard, "count": e.count}
                     for p, e in sorted(src.entries().items()) if e.shard)
        return parts

    def work(part: dict[str, Any]) -> PartResult:
        # the records file holds one line per sample of the shard: its count is the manifest's
        return PartResult(part["count"], [STAGE], count=part["count"], inputs=[part["records"]])

    def conclude(entries: dict[str, PartEntry]) -> dict[str, Any]:
        records = [r for p in parts for r in read_records(src.dir, p["records"], p["shard"])]
        files = write_exports(folder, cfg, records)
        manifest = stage_manifest(cfg, records, f"{source_stage}/", f"{STAGE}/")
        write_bytes_atomic(folder.dir / STAGES_FILE, json.dumps(manifest, indent=1).encode())
        return {"files": [*files, STAGES_FILE], "reads": source_stage}

    return Stage(STAGE, plan=plan, work=work, upstream=source_stage, conclude=conclude)
