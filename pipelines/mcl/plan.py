"""The mcl stage's plan: records grouped by modality, split and source, cut into shards of
`shard_size` in key order; what every part's manifest line records about itself, and the
build's summary of them."""
from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from fusionweave.transforms.mcl.record import MODALITIES, Record
from fusionweave.pipelines.storage.build_folder import PartEntry


def plan_parts(records: list[Record], roots: dict[str, Path], shard_size: int) -> list[dict[str, Any]]:
    groups: dict[tuple[str, str, str], list[Record]] = defaultdict(list)
    for r in records:
        groups[(r.modality, r.split_dir, r.source)].append(r)
    parts = []
    for (modality, split, source), recs in sorted(groups.items(), key=lambda kv: (MODALITIES.index(kv[0][0]),
                                                                                   kv[0][1], kv[0][2])):
        recs.sort(key=lambda r: r.key)
        for i in range(0, len(recs), shard_size):
            n = i // shard_size
            parts.append({"part": f"{modality}/{split}/{source}/{n:06d}", "modality": modality, "split": split,
                          "source": source, "shard": f"{modality}/{split}/{source}/shard-{n:06d}.tar",
                          "rejects_name": f"{modality}-{split}-{source}-{n:06d}",
                          "records": [{"record": r.to_json(), "path": str(roots[r.source] / r.media)}
                                      for r in recs[i:i + shard_size]]})
    return parts


class MediaStats:
    """Per-metric count, sum, min and max (durations, frame counts, point counts), mergeable."""

    def __init__(self, d: dict[str, dict[str, float]] | None = None):
        self.d: dict[str, dict[str, float]] = {k: dict(v) for k, v in (d or {}).items()}

    def add(self, info: dict[str, Any]) -> None:
        """One sample's numeric facts (lists such as frame indices are not statistics)."""
        self.merge({k: {"n": 1, "sum": v, "min": v, "max": v} for k, v in info.items()
                    if isinstance(v, (int, float)) and not isinstance(v, bool)})

    def merge(self, other: dict[str, dict[str, float]]) -> None:
        for k, o in other.items():
            s = self.d.setdefault(k, {"n": 0, "sum": 0.0, "min": o["min"], "max": o["max"]})
            s["n"] += o["n"]
            s["sum"] = round(s["sum"] + o["sum"], 6)
            s["min"], s["max"] = min(s["min"], o["min"]), max(s["max"], o["max"])

    def summary(self) -> dict[str, dict[str, float]]:
        return {k: {**s, "mean": round(s["sum"] / s["n"], 3) if s["n"] else 0.0} for k, s in self.d.items()}


def part_info(part: dict[str, Any], kept: list[Record], rejects: list[dict[str, Any]], media: MediaStats,
              preprocess: dict[str, Any]) -> dict[str, Any]:
    return {"modality": part["modality"], "split": part["split"], "source": part["source"],
            "tasks": dict(Counter(r.task for r in kept)), "rejects_by_reason": dict(Counter(r["reason"] for r in rejects)),
            "media": media.d, "preprocess": preprocess}


def build_summary(entries: list[PartEntry]) -> dict[str, Any]:
    """Counts per modality, split, task and source; rejects by reason per modality; media stats."""
    counts: dict[str, Any] = {}
    rejects: dict[str, Counter] = defaultdict(Counter)
    media: dict[str, MediaStats] = defaultdict(MediaStats)
    for e in (x.extra for x in entries):
        for m, by in e.get("plan_rejects", {}).items():
            rejects[m].update(by)
        if "modality" not in e:
            continue
        m = e["modality"]
        for task, n in e["tasks"].items():
            by_source = counts.setdefault(m, {}).setdefault(e["split"], {}).setdefault(task, {})
            by_source[e["source"]] = by_source.get(e["source"], 0) + n
        rejects[m].update(e["rejects_by_reason"])
        media[m].merge(e["media"])
    return {"counts": counts, "rejects": {m: dict(sorted(c.items())) for m, c in rejects.items()},
            "media": {m: s.summary() for m, s in media.items()}}
