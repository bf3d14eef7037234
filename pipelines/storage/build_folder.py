"""A stage's folder, on local disk or an object store: shards, `_rejects/`, `_parts/` (one
record per completed part, created conditionally while the stage runs: the resume record),
`_manifest.jsonl` (every part, written when the stage ends) and `_stats.json` (written last:
its presence means the stage is complete).

Object stores have no append: instead of a manifest that grows, each part commits by creating
its own record, once (`store.create`). A second run of a part (a straggler's twin, a retried
task) finds the record and leaves it, and the shard it describes, as they are."""
from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable

import pyarrow as pa

from fusionweave.pipelines.errors import BuildSetupError
from fusionweave.pipelines.storage import store
from fusionweave.pipelines.storage.location import Loc, ObjectPath, location
from fusionweave.pipelines.storage.shard_sink import write_parquet, write_rejects, write_shard
from fusionweave.transforms.step import StepStats, merge_stats, stats_from_json, stats_to_json

MANIFEST = "_manifest.jsonl"
STATS = "_stats.json"
WORK = "_work"
PARTS = "_parts"


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


@dataclass
class Written:
    """What `StageFolder.write_part` put on disk."""

    shard: str | None = None
    count: int = 0
    bytes: int | None = None
    sha256: str | None = None
    rejects: str | None = None


class StageFolder:
    def __init__(self, out: str | Path | ObjectPath, stage: str):
        self.out = location(out)
        self.stage = stage
        self.dir = self.out / stage
        self.manifest_path = self.dir / MANIFEST
        self.stats_path = self.dir / STATS
        self.parts_dir = self.dir / PARTS

    @property
    def work(self) -> Loc:
        return self.dir / WORK

    def is_complete(self) -> bool:
        return store.exists(self.stats_path)

    def prepare(self) -> None:
        if isinstance(self.dir, Path):
            self.dir.mkdir(parents=True, exist_ok=True)
        store.clean_tmp(self.dir)

    def manifest_lines(self) -> list[tuple[int, PartEntry | None]]:
        """Every manifest line as (line number, entry); None where a line does not parse."""
        try:
            text = store.read_text(self.manifest_path)
        except FileNotFoundError:
            return []
        return [(i, _parse(line)) for i, line in enumerate(text.splitlines(), 1)]

    def recorded(self, part: str) -> PartEntry | None:
        """The record of `part`, when one was committed."""
        try:
            return _parse(store.read_text(self.parts_dir / f"{part}.json"))
        except FileNotFoundError:
            return None

    def record(self, entry: PartEntry) -> PartEntry:
        """Commit a part: create its record unless one exists. Returns the record that stands
        (the first, when this was a late duplicate)."""
        if store.create(self.parts_dir / f"{entry.part}.json", json.dumps(entry.to_json()).encode()):
            return entry
        return self.recorded(entry.part) or entry

    def entries(self) -> dict[str, PartEntry]:
        """Completed parts: the manifest's lines and the part records. An entry whose shard is
        missing or of the wrong size is ignored, so that part is simply done again."""
        # recursive: part names may hold '/' (mcl's image/train/coco_caption/000000)
        names = [n for n in store.files(self.parts_dir, recursive=True) if n.endswith(".json")]
        records = store.read_each(lambda n: self.recorded(n[:-len(".json")]), names)
        found = [e for _, e in self.manifest_lines() if e is not None] + [e for e in records if e is not None]
        shards = store.files(self.dir, recursive=any("/" in (e.shard or "") for e in found)) if found else {}
        return {e.part: e for e in found if e.shard is None or shards.get(e.shard) == e.bytes}

    def write_part(self, part: str, *, name: str | None = None, samples: Iterable[dict[str, Any]] | None = None,
                   table: pa.Table | None = None, rejects: pa.Table | None = None,
                   rejects_name: str | None = None) -> "Written":
        """A part's files, each committed whole: its shard `name` (a tar of `samples`, or a
        parquet `table`; none when neither is given) and its rejects."""
        out = Written()
        if samples is not None or table is not None:
            if name is None:
                raise ValueError(f"{self.stage} part {part}: a shard needs a name")
            info = write_shard(self.dir / name, samples) if samples is not None else write_parquet(self.dir / name, table)
            out.shard, out.count, out.bytes, out.sha256 = name, info["count"], info["bytes"], info["sha256"]
        if rejects is not None:
            out.rejects = write_rejects(self.dir, rejects_name or Path(name or part).stem, rejects)
        return out

    def finish(self, entries: Iterable[PartEntry], seconds: float = 0.0, info: dict[str, Any] | None = None,
               steps: dict[str, StepStats] | None = None) -> dict[str, Any]:
        """Commit the stage: the manifest in part order, then (work folder and part records
        gone) `_stats.json`, last."""
        entries = sorted(entries, key=lambda e: e.part)
        stats = summarise(self.stage, entries, seconds, info)
        if steps is not None:
            # counts reported by the engine itself (Beam metrics) must agree with the shards'
            derived = {k: (v["rows_in"], v["rows_out"], v["rejects"]) for k, v in stats["steps"].items()}
            reported = {k: (v.rows_in, v.rows_out, dict(sorted(v.rejects.items()))) for k, v in steps.items()}
            if derived != reported:
                raise RuntimeError(f"{self.stage}: engine metrics {reported} disagree with the manifest {derived}")
            stats["steps"] = stats_to_json(steps)
        store.put_bytes(self.manifest_path, "".join(json.dumps(e.to_json()) + "\n" for e in entries).encode())
        store.delete_tree(self.work)
        store.delete_tree(self.parts_dir)
        store.put_bytes(self.stats_path, json.dumps(stats, indent=2).encode())
        return stats

    def stats(self) -> dict[str, Any]:
        return json.loads(store.read_text(self.stats_path))


def _parse(line: str) -> PartEntry | None:
    """A manifest line or part record; None where it does not parse (a torn line)."""
    try:
        return PartEntry.from_json(json.loads(line))
    except (json.JSONDecodeError, TypeError, KeyError, AttributeError):
        return None


class IncompleteStage(BuildSetupError):
    pass


def stage_shards(path: str | Path | ObjectPath, suffix: str = ".tar") -> list[tuple[Loc, int]] | None:
    """The shards of a stage folder with their sample counts, in part order, from its manifest;
    None when `path` is not a stage folder. A stage that did not finish is refused: its manifest
    lists only the parts that happened to complete."""
    path = location(path)
    if not store.exists(path / MANIFEST) and not store.is_dir(path / PARTS):
        return None
    folder = StageFolder(path.parent, path.name)
    if not folder.is_complete():
        raise IncompleteStage(f"{path} is a stage that did not finish (no {STATS}; its build was interrupted): "
                              "rerun that build to complete it before reading it")
    return [(folder.dir / e.shard, e.count) for _, e in sorted(folder.entries().items())
            if e.shard and e.shard.endswith(suffix)]  # parts that kept no sample have no shard


def summarise(stage: str, entries: list[PartEntry], seconds: float, info: dict[str, Any] | None) -> dict[str, Any]:
    steps: dict[str, StepStats] = {}
    for e in entries:
        merge_stats(steps, e.stats)
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
