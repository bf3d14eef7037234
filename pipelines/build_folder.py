"""A stage's folder: shards, `_manifest.jsonl` (the per-shard completion record used for
resume), `_rejects/`, `_stats.json` (written last: its presence means the stage is complete)."""
from __future__ import annotations

import json
import os
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Any, Iterable

from fusionweave.pipelines.atomic import clean_tmp, write_bytes_atomic
from fusionweave.transforms.step import StepStats, merge_stats, stats_from_json, stats_to_json

MANIFEST = "_manifest.jsonl"
STATS = "_stats.json"
WORK = "_work"


class StageFolder:
    def __init__(self, out: str | os.PathLike, stage: str):
        self.out = Path(out)
        self.stage = stage
        self.dir = self.out / stage
        self.manifest_path = self.dir / MANIFEST
        self.stats_path = self.dir / STATS

    @property
    def work(self) -> Path:
        return self.dir / WORK

    def is_complete(self) -> bool:
        return self.stats_path.exists()

    def prepare(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        clean_tmp(self.dir)

    def entries(self) -> dict[str, dict[str, Any]]:
        """Completed parts. A torn last line (killed mid-append) or an entry whose shard is
        missing or of the wrong size is ignored, so that part is simply done again."""
        done: dict[str, dict[str, Any]] = {}
        if not self.manifest_path.exists():
            return done
        for line in self.manifest_path.read_text().splitlines():
            try:
                e = json.loads(line)
            except json.JSONDecodeError:
                continue
            shard = e.get("shard")
            if shard is not None:
                p = self.dir / shard
                if not p.exists() or p.stat().st_size != e.get("bytes"):
                    continue
            done[e["part"]] = e
        return done

    def append(self, entry: dict[str, Any]) -> None:
        line = json.dumps(entry) + "\n"
        with open(self.manifest_path, "a") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())

    def finish(self, entries: Iterable[dict[str, Any]], extra_steps: dict[str, StepStats] | None = None,
               seconds: float = 0.0, info: dict[str, Any] | None = None,
               steps: dict[str, StepStats] | None = None) -> dict[str, Any]:
        """Rewrite the manifest in part order, drop the work folder and write `_stats.json`."""
        entries = sorted(entries, key=lambda e: e["part"])
        lines = "".join(json.dumps(e) + "\n" for e in entries)
        write_bytes_atomic(self.manifest_path, lines.encode())
        stats = summarise(self.stage, entries, extra_steps, seconds, info)
        if steps is not None:
            # counts reported by the engine itself (Beam metrics) must agree with the shards'
            derived = {k: (v["rows_in"], v["rows_out"], v["rejects"]) for k, v in stats["steps"].items()}
            reported = {k: (v.rows_in, v.rows_out, dict(sorted(v.rejects.items()))) for k, v in steps.items()}
            if derived != reported:
                raise RuntimeError(f"{self.stage}: engine metrics {reported} disagree with the manifest {derived}")
            stats["steps"] = stats_to_json(steps)
        if self.work.exists():
            shutil.rmtree(self.work)
        write_bytes_atomic(self.stats_path, json.dumps(stats, indent=2).encode())
        return stats

    def stats(self) -> dict[str, Any]:
        return json.loads(self.stats_path.read_text())


def summarise(stage: str, entries: list[dict[str, Any]], extra_steps: dict[str, StepStats] | None,
              seconds: float, info: dict[str, Any] | None) -> dict[str, Any]:
    steps: dict[str, StepStats] = {}
    for e in entries:
        merge_stats(steps, stats_from_json(e.get("stats", {})))
    if extra_steps:
        merge_stats(steps, extra_steps)
    by_reason: Counter = Counter()
    for st in steps.values():
        by_reason.update(st.rejects)
    rows_in = sum(e["rows_in"] for e in entries)
    rows_out = sum(e["count"] for e in entries)
    rejected = sum(e["rejected"] for e in entries)
    return {
        "stage": stage,
        "rows_in": rows_in,
        "rows_out": rows_out,
        "rejected": rejected,
        "balanced": rows_in == rows_out + rejected,
        "rejects_by_reason": dict(sorted(by_reason.items())),
        "steps": stats_to_json(steps),
        "shards": sum(1 for e in entries if e.get("shard")),
        "bytes": sum(e.get("bytes", 0) or 0 for e in entries if e.get("shard")),
        "seconds": round(seconds, 3),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **(info or {}),
    }
