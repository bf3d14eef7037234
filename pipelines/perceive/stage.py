"""The perceive stage: every input sample gets `experts.json` (and `depth.png` when depth ran).

CPU tasks read the shards (image bytes and upright size); the chain of experts runs on the
engine (model steps as actor pools, their prepare/postprocess as CPU tasks); a worker finishes
each part (see `model_parts`), rewriting its shard with the new members. Only unreadable samples are rejects; an
expert failing on a sample is recorded in that sample's `experts.json` and counted.
"""
from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from fusionweave.experts.depth import DETECTIONS, PNG
from fusionweave.experts.expert import Expert, result_column
from fusionweave.experts.pixels import error_text
from fusionweave.pipelines.build_folder import PartEntry, StageFolder
from fusionweave.pipelines.engine import Batch, ModelEngine
from fusionweave.pipelines.image_parts import gather, image_part_reader
from fusionweave.pipelines.model_parts import run_model_parts
from fusionweave.pipelines.perceive.config import PerceiveConfig
from fusionweave.pipelines.perceive.chain import MergeDetections, build_chain
from fusionweave.pipelines.shard_sink import shard_name
from fusionweave.pipelines.shard_source import ImageSample
from fusionweave.transforms.step import StepStats
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


def finish_part(folder: StageFolder, part: dict[str, Any], rows: Batch, experts: list[Expert],
                merge: MergeDetections | None) -> PartEntry:
    p = part["part"]
    rec, rej, samples = gather(folder.work, STAGE, part, rows)
    n = len(rows.get("key", ()))
    out: list[dict[str, Any]] = []
    errors: Counter = Counter()
    model_seconds: Counter = Counter()
    for item, j in samples:
        row = {k: v[j] for k, v in rows.items()}
        doc = experts_json(row, experts, merge)
        for name, x in doc["experts"].items():
            errors[name] += x["error"] is not None
            model_seconds[name] += x["seconds"]
        sample = {"__key__": item.key, **item.members, "experts.json": doc}
        if PNG in row and len(row[PNG]):
            sample["depth.png"] = row[PNG]
        out.append(sample)
    read_rejects = Counter()
    for _step, reason, count in rec["rejects"]:
        read_rejects[reason] += count
    stats = {READ_STEP: StepStats(rec["rows_in"], n, read_rejects, rec["read_seconds"])}
    for e in experts:
        stats[e.name] = StepStats(n, n, Counter(), model_seconds[e.name])
    return folder.commit(p, rows_in=rec["rows_in"], stats=stats, rejects=rej, inputs=[part["input"]],
                         name=shard_name(int(p)), samples=out or None,
                         expert_errors={k: v for k, v in sorted(errors.items()) if v})


def run(cfg: PerceiveConfig, out: Path, engine: ModelEngine, parts: list[dict[str, Any]],
        experts: list[Expert]) -> dict[str, Any]:
    folder = StageFolder(out, STAGE)
    if folder.is_complete():
        return folder.stats()
    t0 = time.perf_counter()
    chain = build_chain(experts, cfg.boxes)
    merge = next((s for s in chain if isinstance(s, MergeDetections)), None)

    def finish(part: dict[str, Any], rows: Batch) -> PartEntry:
        return finish_part(folder, part, rows, experts, merge)

    entries = run_model_parts(engine, folder, parts, image_part_reader(folder.work, STAGE, cfg.chunk_size, to_batch),
                              chain, finish, read_cpus=cfg.read_cpus, desc="perceive", drop=("image",))
    errors: Counter = Counter()
    for e in entries.values():
        errors.update(e.extra.get("expert_errors", {}))
    info = {"experts": [e.info() for e in experts], "expert_errors": dict(sorted(errors.items())),
            "schema": SCHEMA}
    if merge is not None:
        info["boxes"] = merge.settings()
    return folder.finish(entries.values(), None, time.perf_counter() - t0, info=info)
