"""`fusionweave verify OUT`: every shard against its manifest, every stage's accounting, and
nothing partial or unlisted. Returns a precise list of problems (empty when the build is sound)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from fusionweave.pipelines.storage import store
from fusionweave.pipelines.storage.build_folder import MANIFEST, PARTS, STATS, StageFolder
from fusionweave.pipelines.storage.location import Loc, ObjectPath, location
from fusionweave.pipelines.storage.shard_source import Sample, iter_shard


def stage_dirs(out: Loc) -> list[Loc]:
    """Stage folders: finished (a manifest) or still running (part records)."""
    return sorted({p.parent for p in store.glob(out, f"*/{MANIFEST}") + store.glob(out, f"*/{PARTS}")}, key=str)


def shard_count(path: Loc) -> int:
    if path.suffix == ".parquet":
        return store.parquet_file(path).metadata.num_rows
    return sum(1 for item in iter_shard(path) if isinstance(item, Sample))


def sha256_of(path: Loc) -> str:
    h = hashlib.sha256()
    with store.open_input(path) as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_stage(d: Loc, deep: bool = True) -> list[str]:
    """`deep`: also hash every shard and count its samples (reads all the data); without it,
    the manifest's accounting, the files it lists and their sizes."""
    problems: list[str] = []
    name = d.name
    entries = []
    for i, e in StageFolder(d.parent, name).manifest_lines():
        if e is None:
            problems.append(f"{name}/{MANIFEST}:{i}: not a manifest entry (torn line?)")
        else:
            entries.append(e)
    listed: set[str] = set()
    present = store.files(d, recursive=True)  # relative path -> size, one listing
    for e in entries:
        part = e.part
        if e.rows_in != e.count + e.rejected:
            problems.append(f"{name} part {part}: rows_in {e.rows_in} != count {e.count} + rejected {e.rejected}")
        if e.rejects:
            rp = d / e.rejects
            if e.rejects not in present:
                problems.append(f"{name}/{e.rejects}: listed in the manifest but missing")
            elif (n := store.parquet_file(rp).metadata.num_rows) != e.rejected:
                problems.append(f"{name}/{e.rejects}: {n} reject rows, manifest says {e.rejected}")
        elif e.rejected:
            problems.append(f"{name} part {part}: {e.rejected} rejects but no rejects file")
        shard = e.shard
        if not shard:
            continue
        listed.add(shard)
        p = d / shard
        if shard not in present:
            problems.append(f"{name}/{shard}: missing")
            continue
        if present[shard] != e.bytes:
            problems.append(f"{name}/{shard}: {present[shard]} bytes, manifest says {e.bytes}")
        if not deep:
            continue
        if sha256_of(p) != e.sha256:
            problems.append(f"{name}/{shard}: sha256 differs from the manifest (corrupt or changed)")
        try:
            n = shard_count(p)
        except Exception as err:  # noqa: BLE001 - an unreadable shard is a finding, not a crash
            problems.append(f"{name}/{shard}: unreadable: {err}")
            continue
        if n != e.count:
            problems.append(f"{name}/{shard}: {n} samples, manifest says {e.count}")
    for rel in sorted(present):  # shards may sit in subfolders (mcl: modality/split/source)
        *folders, base = rel.split("/")
        if base.startswith("shard-") and not store.is_tmp(base) and rel not in listed \
                and not any(f.startswith("_") for f in folders):  # _rejects/, _work/: not shards
            problems.append(f"{name}/{rel}: shard not listed in the manifest")
    problems += [f"{name}/{rel}: partial file left by an interrupted write" for rel in sorted(present)
                 if store.is_tmp(rel.rsplit("/", 1)[-1])]
    if STATS not in present:
        problems.append(f"{name}: no {STATS} (stage did not finish)")
        return problems
    st = json.loads(store.read_text(d / STATS))
    if st["rows_in"] != st["rows_out"] + st["rejected"]:
        problems.append(f"{name}: rows in {st['rows_in']} != out {st['rows_out']} + rejected {st['rejected']}")
    for key, total in (("rows_in", sum(e.rows_in for e in entries)), ("rows_out", sum(e.count for e in entries)),
                       ("rejected", sum(e.rejected for e in entries))):
        if st[key] != total:
            problems.append(f"{name}: {STATS} {key} {st[key]} != {total} from the manifest")
    return problems


def verify(out: str | Path | ObjectPath, stage_order: list[str] | None = None, only: list[str] | None = None,
           deep: bool = True) -> list[str]:
    """`only`: check these stages (their links to the stage before them too), not every stage."""
    out = location(out)
    dirs = [d for d in stage_dirs(out) if only is None or d.name in only]
    if not dirs:
        return [f"{out}: no stage folders with a {MANIFEST}"]
    problems: list[str] = []
    for d in dirs:
        problems += verify_stage(d, deep)
    # each stage reads exactly what the one before it wrote
    if stage_order:
        finished = [s for s in stage_order if store.exists(out / s / STATS)]
        for a, b in zip(finished, finished[1:]):
            if only is not None and b not in only:
                continue
            sb = json.loads(store.read_text(out / b / STATS))
            if "reads" in sb:  # a stage that names its source (None: a sample of one, as the teacher set)
                if sb["reads"] is None:
                    continue
                a = sb["reads"]
            sa = json.loads(store.read_text(out / a / STATS))
            if sb["rows_in"] != sa["rows_out"]:
                problems.append(f"{b}: rows in {sb['rows_in']} != {a} rows out {sa['rows_out']}")
    return problems
