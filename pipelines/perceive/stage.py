"""The perceive stage: every input sample gets `experts.json` (and `depth.png` when depth ran).

CPU tasks read the shards (image bytes and upright size); the chain of experts runs on the
engine (model steps as actor pools, their prepare/postprocess as CPU tasks); a worker finishes
each part (see `runner.run_model_parts`), rewriting its shard with the new members. Only unreadable samples are rejects; an
expert failing on a sample is recorded in that sample's `experts.json` and counted.
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from fusionweave.experts.depth import DETECTIONS, PNG
from fusionweave.experts.expert import Expert, result_column
from fusionweave.experts.pixels import error_text
from fusionweave.pipelines.storage.build_folder import PartEntry, StageFolder
from fusionweave.pipelines.engine import Batch
from fusionweave.pipelines.image_reader import gather, image_part_reader
from fusionweave.pipelines.runner import ModelWork, PartResult, Stage
from fusionweave.pipelines.perceive.config import PerceiveConfig
from fusionweave.pipelines.perceive.chain import MergeDetections, build_chain
from fusionweave.pipelines.storage.shard_sink import shard_name
from fusionweave.pipelines.storage.shard_source import READ_SHARD, ImageSample
from fusionweave.transforms.image_validate import open_image

STAGE = "perceive"
READ_STEP = "read_image"
SCHEMA = "fusionweave.experts/1"
ROTATED = {5, 6, 7, 8}  # EXIF orientations that swap width and height


def upright_size(data: bytes) -> tuple[int, int]:
    """Width and height after EXIF orientation, from the header only (no pixel decode)."""
    with open_image(data) as im:
        w, h = im.size
        try:
            orientation = im.getexif().get(0x0112)
        except Exception:  # noqa: BLE001 - unreadable metadata: the experts will say what is wrong
            orientation = None
    return (h, w) if orientation in ROTATED else (w, h)


def to_batch(items: list[ImageSample], bad: list[dict[str, Any]]) -> Batch | None:
    keep, sizes = [], []
    for s in items:
        try:
            sizes.append(upright_size(s.members[s.image_ext]))
            keep.append(s)
        except Exception as err:  # noqa: BLE001 - an unreadable header is this sample's reject
            bad.append({"key": s.key, "step": READ_STEP, "reason": "undecodable", "detail": error_text(err),
                        "url": s.meta.get("url")})
    if not keep:
        return None
    return {"key": np.array([s.key for s in keep], dtype=object), "idx": np.array([s.index for s in keep], np.int64),
            "image": np.array([s.members[s.image_ext] for s in keep], dtype=object),
            "width": np.array([w for w, _ in sizes], np.int32), "height": np.array([h for _, h in sizes], np.int32)}


def experts_json(row: dict[str, Any], experts: list[Expert], merge: MergeDetections | None) -> dict[str, Any]:
    doc: dict[str, Any] = {"schema": SCHEMA, "image": {"width": int(row["width"]), "height": int(row["height"])},
                           "experts": {}}
    for e in experts:
        rec = json.loads(row[result_column(e.name)])
        info = e.info()
        doc["experts"][e.name] = {"model": info["model"], "revision": info["revision"], "settings": info["settings"],
                                  "results": rec["results"], "seconds": rec["seconds"], "error": rec["error"]}
    if merge is not None:
        doc["detections"] = json.loads(row[DETECTIONS])
        doc["detections_settings"] = merge.settings()
    return doc


def finish_part(work: Path, part: dict[str, Any], rows: Batch, experts: list[Expert],
                merge: MergeDetections | None) -> PartResult:
    rec, rej, samples = gather(work, STAGE, part, rows)
    out: list[dict[str, Any]] = []
    errors: Counter = Counter()
    seconds: Counter = Counter({READ_SHARD: rec["read_seconds"]})
    for item, j in samples:
        row = {k: v[j] for k, v in rows.items()}
        doc = experts_json(row, experts, merge)
        for name, x in doc["experts"].items():
            errors[name] += x["error"] is not None
            seconds[name] += x["seconds"]
        sample = {"__key__": item.key, **item.members, "experts.json": doc}
        if PNG in row and len(row[PNG]):
            sample["depth.png"] = row[PNG]
        out.append(sample)
    return PartResult(rec["rows_in"], [READ_SHARD, READ_STEP, *(e.name for e in experts)], rej, seconds, samples=out or None,
                      name=shard_name(int(part["part"])),
                      extra={"expert_errors": {k: v for k, v in sorted(errors.items()) if v}})


def stage(cfg: PerceiveConfig, out: Path, parts: list[dict[str, Any]], experts: list[Expert]) -> Stage:
    work = StageFolder(out, STAGE).work
    chain = build_chain(experts, cfg.boxes)
    merge = next((s for s in chain if isinstance(s, MergeDetections)), None)

    def finish(part: dict[str, Any], rows: Batch) -> PartResult:
        return finish_part(work, part, rows, experts, merge)

    def info(entries: dict[str, PartEntry]) -> dict[str, Any]:
        errors: Counter = Counter()
        for e in entries.values():
            errors.update(e.extra.get("expert_errors", {}))
        got = {"experts": [e.info() for e in experts], "expert_errors": dict(sorted(errors.items())), "schema": SCHEMA}
        if merge is not None:
            got["boxes"] = merge.settings()
        return got

    reader = image_part_reader(work, STAGE, cfg.chunk_size, to_batch)
    return Stage(STAGE, plan=lambda: parts, model=ModelWork(reader, chain, finish, cfg.read_cpus, drop=("image",)),
                 conclude=info)
