"""Write one part: its samples as a shard, its rejects as parquet, its manifest line."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from fusionweave.pipelines.atomic import write_bytes_atomic
from fusionweave.pipelines.build_folder import PartEntry, StageFolder
from fusionweave.pipelines.mcl.config import MclConfig
from fusionweave.pipelines.mcl.media import BUILDERS, MediaError, preprocessing
from fusionweave.pipelines.mcl.parts import MediaStats, part_info
from fusionweave.pipelines.shard_sink import make_rejects
from fusionweave.transforms.mcl.record import Record
from fusionweave.transforms.step import StepStats

RECORDS = "_records"


def reject(rec: Record, step: str, reason: str, detail: str) -> dict[str, Any]:
    return {"key": rec.key, "step": step, "reason": reason, "detail": f"{rec.source}: {rec.media}: {detail}"}


def finish_part(folder: StageFolder, part: dict[str, Any], samples: list[dict[str, Any]], kept: list[Record],
                rejects: list[dict[str, Any]], stats: dict[str, StepStats], media: MediaStats,
                preprocess: dict[str, Any]) -> PartEntry:
    entry = folder.commit(part["part"], rows_in=len(part["records"]), stats=stats,
                          rejects=make_rejects(rejects, folder.stage), name=part["shard"], samples=samples or None,
                          rejects_name=part["rejects_name"], **part_info(part, kept, rejects, media, preprocess))
    if samples:
        # the kept records beside the shard, so exports need not read the media back
        rel = f"{RECORDS}/{part['rejects_name']}.jsonl"
        write_bytes_atomic(folder.dir / rel, "".join(
            json.dumps({**s["json"], "rows": r.rows}, sort_keys=True, ensure_ascii=False) + "\n"
            for s, r in zip(samples, kept)).encode())
        entry.extra["records"] = rel
    return entry


def write_part(folder: StageFolder, cfg: MclConfig, part: dict[str, Any]) -> PartEntry:
    """Image, video, audio and point-cloud parts (depth parts need the model: depth_parts)."""
    build = BUILDERS[part["modality"]]
    stats = {"read": StepStats(), "preprocess": StepStats()}
    samples, kept, rejects, media = [], [], [], MediaStats()
    for item in part["records"]:
        rec = Record(**item["record"])
        t0 = time.perf_counter()
        stats["read"].rows_in += 1
        try:
            data = Path(item["path"]).read_bytes()
        except OSError as err:
            rejects.append(reject(rec, "read", "media_unreadable", f"{type(err).__name__}: {err}"))
            stats["read"].rejects["media_unreadable"] += 1
            continue
        t1 = time.perf_counter()
        stats["read"].rows_out += 1
        stats["read"].seconds += t1 - t0
        stats["preprocess"].rows_in += 1
        try:
            members, info = build(rec, data, cfg)
        except MediaError as err:
            rejects.append(reject(rec, "preprocess", err.reason, str(err)))
            stats["preprocess"].rejects[err.reason] += 1
            continue
        finally:
            stats["preprocess"].seconds += time.perf_counter() - t1
        stats["preprocess"].rows_out += 1
        media.add(info)
        kept.append(rec)
        samples.append({"__key__": rec.key, **members, **rec.members(info)})
    return finish_part(folder, part, samples, kept, rejects, stats, media, preprocessing(cfg, part["modality"]))
