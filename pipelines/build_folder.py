"""A stage's folder: shards, `_manifest.jsonl` (the per-shard completion record used for
resume), `_rejects/`, `_stats.json` (written last: its presence means the stage is complete)."""
from __future__ import annotations

import json
import os
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable, Sequence

import pyarrow as pa

from fusionweave.pipelines.atomic import clean_tmp, write_bytes_atomic
from fusionweave.pipelines.errors import BuildSetupError
from fusionweave.pipelines.shard_sink import write_parquet, write_rejects, write_shard
from fusionweave.transforms.step import StepStats, merge_stats, stats_from_json, stats_to_json

MANIFEST = "_manifest.jsonl"
STATS = "_stats.json"
WORK = "_work"


@dataclass
class PartEntry:
    """One line of `_manifest.jsonl`: a completed part. `extra` holds what a stage records
    beside the accounting (expert errors, QC flags, ...); on disk it is flat, next to the rest."""

    part: str
    rows_in: int
    rejected: int
    stats: dict[str, StepStats] = field(default_factory=dict)
    inputs: list[str] = field(default_factory=list)
    shard: str | None = None
    count: int = 0
    bytes: int | None = None
    sha256: str | None = None
    rejects: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("stats", "extra")}
        return {**d, "stats": stats_to_json(self.stats), **self.extra}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "PartEntry":
        names = {f.name for f in fields(cls)} - {"stats", "extra"}
        return cls(**{k: v for k, v in d.items() if k in names}, stats=stats_from_json(d.get("stats", {})),
                   extra={k: v for k, v in d.items() if k not in names and k != "stats"})


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

    def entries(self) -> dict[str, PartEntry]:
        """Completed parts. A torn last line (killed mid-append) or an entry whose shard is
        missing or of the wrong size is ignored, so that part is simply done again."""
        done: dict[str, PartEntry] = {}
        if not self.manifest_path.exists():
            return done
        for line in self.manifest_path.read_text().splitlines():
            try:
                e = PartEntry.from_json(json.loads(line))
            except (json.JSONDecodeError, TypeError, KeyError):
                continue
            if e.shard is not None:
                p = self.dir / e.shard
                if not p.exists() or p.stat().st_size != e.bytes:
                    continue
            done[e.part] = e
        return done

    def append(self, entry: PartEntry) -> None:
        line = json.dumps(entry.to_json()) + "\n"
        with open(self.manifest_path, "a") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())

    def commit(self, part: str, *, rows_in: int, stats: dict[str, StepStats], rejects: pa.Table | None = None,
               inputs: Sequence[str] = (), name: str | None = None, samples: Iterable[dict[str, Any]] | None = None,
               table: pa.Table | None = None, rejects_name: str | None = None, **extra: Any) -> PartEntry:
        """A part's outputs, each written atomically: its shard `name` (a tar of `samples`, or a
        parquet `table`; none when neither is given), its rejects, and the manifest entry that
        describes them (appended by the runner once it has it)."""
        entry = PartEntry(part, rows_in, rejects.num_rows if rejects is not None else 0, stats, list(inputs),
                          extra=extra)
        if samples is not None or table is not None:
            assert name is not None, "a shard needs a name"
            info = write_shard(self.dir / name, samples) if samples is not None else write_parquet(self.dir / name, table)
            entry.shard, entry.count, entry.bytes, entry.sha256 = name, info["count"], info["bytes"], info["sha256"]
        if rejects is not None:
            entry.rejects = write_rejects(self.dir, rejects_name or Path(name or part).stem, rejects)
        return entry

    def finish(self, entries: Iterable[PartEntry], extra_steps: dict[str, StepStats] | None = None,
               seconds: float = 0.0, info: dict[str, Any] | None = None,
               steps: dict[str, StepStats] | None = None) -> dict[str, Any]:
        """Rewrite the manifest in part order, drop the work folder and write `_stats.json`."""
        entries = sorted(entries, key=lambda e: e.part)
        lines = "".join(json.dumps(e.to_json()) + "\n" for e in entries)
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


class IncompleteStage(BuildSetupError):
    pass


def stage_shards(path: Path, suffix: str = ".tar") -> list[tuple[Path, int]] | None:
    """The shards of a stage folder with their sample counts, in part order, from its manifest;
    None when `path` is not a stage folder. A stage that did not finish is refused: its manifest
    lists only the parts that happened to complete."""
    path = Path(path)
    if not (path / MANIFEST).exists():
        return None
    folder = StageFolder(path.parent, path.name)
    if not folder.is_complete():
        raise IncompleteStage(f"{path} is a stage that did not finish (no {STATS}; its build was interrupted): "
                              "rerun that build to complete it before reading it")
    return [(folder.dir / e.shard, e.count) for _, e in sorted(folder.entries().items())
            if e.shard and e.shard.endswith(suffix)]  # parts that kept no sample have no shard


def summarise(stage: str, entries: list[PartEntry], extra_steps: dict[str, StepStats] | None,
              seconds: float, info: dict[str, Any] | None) -> dict[str, Any]:
    steps: dict[str, StepStats] = {}
    for e in entries:
        merge_stats(steps, e.stats)
    if extra_steps:
        merge_stats(steps, extra_steps)
    by_reason: Counter = Counter()
    for st in steps.values():
        by_reason.update(st.rejects)
    rows_in = sum(e.rows_in for e in entries)
    rows_out = sum(e.count for e in entries)
    rejected = sum(e.rejected for e in entries)
    return {
        "stage": stage,
        "rows_in": rows_in,
        "rows_out": rows_out,
        "rejected": rejected,
        "balanced": rows_in == rows_out + rejected,
        "rejects_by_reason": dict(sorted(by_reason.items())),
        "steps": stats_to_json(steps),
        "shards": sum(1 for e in entries if e.shard),
        "bytes": sum(e.bytes or 0 for e in entries if e.shard),
        "seconds": round(seconds, 3),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **(info or {}),
    }
