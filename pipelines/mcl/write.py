"""One mcl part: its samples (for its shard), its rejects, and the kept records beside the shard."""
from __future__ import annotations

import json
import time
from pathlib import Path
from collections import Counter
from typing import Any

from fusionweave.pipelines.storage.atomic import write_bytes_atomic
from fusionweave.pipelines.runner import PartResult
from fusionweave.pipelines.storage.build_folder import StageFolder
from fusionweave.pipelines.mcl.config import MclConfig
from fusionweave.pipelines.mcl.media import BUILDERS, MediaError, preprocessing
from fusionweave.pipelines.mcl.plan import MediaStats, part_info
from fusionweave.pipelines.storage.shard_sink import make_rejects
from fusionweave.transforms.mcl.record import Record

RECORDS = "_records"
READ, PREPROCESS = "read", "preprocess"


def reject(rec: Record, step: str, reason: str, detail: str) -> dict[str, Any]:
    return {"key": rec.key, "step": step, "reason": reason, "detail": f"{rec.source}: {rec.media}: {detail}"}


def part_result(folder: StageFolder, part: dict[str, Any], steps: list[str], samples: list[dict[str, Any]],
                kept: list[Record], rejects: list[dict[str, Any]], seconds: dict[str, float], media: MediaStats,
                preprocess: dict[str, Any]) -> PartResult:
    extra = part_info(part, kept, rejects, media, preprocess)
    if samples:
        # the kept records beside the shard, so exports need not read the media back
        rel = f"{RECORDS}/{part['rejects_name']}.jsonl"
        write_bytes_atomic(folder.dir / rel, "".join(
            json.dumps({**s["json"], "rows": r.rows}, sort_keys=True, ensure_ascii=False) + "\n"
            for s, r in zip(samples, kept)).encode())
        extra["records"] = rel
    return PartResult(len(part["records"]), steps, make_rejects(rejects, folder.stage), seconds,
                      samples=samples or None, name=part["shard"], rejects_name=part["rejects_name"], inputs=[],
                      extra=extra)


def write_part(folder: StageFolder, cfg: MclConfig, part: dict[str, Any]) -> PartResult:
    """Image, video, audio and point-cloud parts (depth parts need the model: mcl.depth)."""
    build = BUILDERS[part["modality"]]
    seconds: Counter = Counter()
    samples, kept, rejects, media = [], [], [], MediaStats()
    for item in part["records"]:
        rec = Record(**item["record"])
        t0 = time.perf_counter()
        try:
            data = Path(item["path"]).read_bytes()
        except OSError as err:
            rejects.append(reject(rec, READ, "media_unreadable", f"{type(err).__name__}: {err}"))
            continue
        finally:
            seconds[READ] += time.perf_counter() - t0
        t1 = time.perf_counter()
        try:
            members, info = build(rec, data, cfg)
        except MediaError as err:
            rejects.append(reject(rec, PREPROCESS, err.reason, str(err)))
            continue
        finally:
            seconds[PREPROCESS] += time.perf_counter() - t1
        media.add(info)
        kept.append(rec)
        samples.append({"__key__": rec.key, **members, **rec.members(info)})
    return part_result(folder, part, [READ, PREPROCESS], samples, kept, rejects, seconds, media,
                       preprocessing(cfg, part["modality"]))
