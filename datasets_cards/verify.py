"""`fusionweave verify OUT`: every shard against its manifest, every stage's accounting, and
nothing partial or unlisted. Returns a precise list of problems (empty when the build is sound)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow.parquet as pq

from fusionweave.pipelines.atomic import is_tmp
from fusionweave.pipelines.build_folder import MANIFEST, STATS
from fusionweave.pipelines.shard_source import Sample, iter_shard


def stage_dirs(out: Path) -> list[Path]:
    return sorted(p.parent for p in out.glob(f"*/{MANIFEST}"))


def shard_count(path: Path) -> int:
    if path.suffix == ".parquet":
        return pq.ParquetFile(path).metadata.num_rows
    return sum(1 for item in iter_shard(path) if isinstance(item, Sample))


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_stage(d: Path) -> list[str]:
    problems: list[str] = []
    name = d.name
    entries = []
    for i, line in enumerate((d / MANIFEST).read_text().splitlines(), 1):
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:
            problems.append(f"{name}/{MANIFEST}:{i}: not valid JSON (torn line?)")
    listed: set[str] = set()
    for e in entries:
        part = e.get("part")
        if e["rows_in"] != e["count"] + e["rejected"]:
            problems.append(f"{name} part {part}: rows_in {e['rows_in']} != count {e['count']} + rejected {e['rejected']}")
        if e.get("rejects"):
            rp = d / e["rejects"]
            if not rp.exists():
                problems.append(f"{name}/{e['rejects']}: listed in the manifest but missing")
            elif (n := pq.ParquetFile(rp).metadata.num_rows) != e["rejected"]:
                problems.append(f"{name}/{e['rejects']}: {n} reject rows, manifest says {e['rejected']}")
        elif e["rejected"]:
            problems.append(f"{name} part {part}: {e['rejected']} rejects but no rejects file")
        shard = e.get("shard")
        if not shard:
            continue
        listed.add(shard)
        p = d / shard
        if not p.exists():
            problems.append(f"{name}/{shard}: missing")
            continue
        if p.stat().st_size != e["bytes"]:
            problems.append(f"{name}/{shard}: {p.stat().st_size} bytes, manifest says {e['bytes']}")
        if sha256_of(p) != e["sha256"]:
            problems.append(f"{name}/{shard}: sha256 differs from the manifest (corrupt or changed)")
        try:
            n = shard_count(p)
        except Exception as err:  # noqa: BLE001 - an unreadable shard is a finding, not a crash
            problems.append(f"{name}/{shard}: unreadable: {err}")
            continue
        if n != e["count"]:
            problems.append(f"{name}/{shard}: {n} samples, manifest says {e['count']}")
    for p in sorted(d.rglob("shard-*")):  # shards may sit in subfolders (mcl: modality/split/source)
        rel = p.relative_to(d)
        if any(part.startswith("_") for part in rel.parts[:-1]):  # _rejects/, _work/: not shards
            continue
        if p.is_file() and not is_tmp(p.name) and str(rel) not in listed:
            problems.append(f"{name}/{rel}: shard not listed in the manifest")
    for p in sorted(d.rglob("*")):
        if p.is_file() and is_tmp(p.name):
            problems.append(f"{name}/{p.relative_to(d)}: partial file left by an interrupted write")
    stats_path = d / STATS
    if not stats_path.exists():
        problems.append(f"{name}: no {STATS} (stage did not finish)")
        return problems
    st = json.loads(stats_path.read_text())
    if st["rows_in"] != st["rows_out"] + st["rejected"]:
        problems.append(f"{name}: rows in {st['rows_in']} != out {st['rows_out']} + rejected {st['rejected']}")
    for key, total in (("rows_in", sum(e["rows_in"] for e in entries)), ("rows_out", sum(e["count"] for e in entries)),
                       ("rejected", sum(e["rejected"] for e in entries))):
        if st[key] != total:
            problems.append(f"{name}: {STATS} {key} {st[key]} != {total} from the manifest")
    return problems


def verify(out: str | Path, stage_order: list[str] | None = None) -> list[str]:
    out = Path(out)
    dirs = stage_dirs(out)
    if not dirs:
        return [f"{out}: no stage folders with a {MANIFEST}"]
    problems: list[str] = []
    for d in dirs:
        problems += verify_stage(d)
    # each stage reads exactly what the one before it wrote
    if stage_order:
        present = [s for s in stage_order if (out / s / STATS).exists()]
        for a, b in zip(present, present[1:]):
            sb = json.loads((out / b / STATS).read_text())
            if "reads" in sb:  # a stage that names its source (None: a sample of one, as the teacher set)
                if sb["reads"] is None:
                    continue
                a = sb["reads"]
            sa = json.loads((out / a / STATS).read_text())
            if sb["rows_in"] != sa["rows_out"]:
                problems.append(f"{b}: rows in {sb['rows_in']} != {a} rows out {sa['rows_out']}")
    return problems
