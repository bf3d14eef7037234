"""Which shards the select build reads: a stage folder (its manifest), a folder of .tar files,
or tar files. Parts are numbered in that order; a part keeps its upstream sample count, so a
tar that breaks later still accounts for every sample it should hold."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fusionweave.pipelines.build_folder import MANIFEST
from fusionweave.pipelines.errors import BuildSetupError
from fusionweave.pipelines.shard_source import Sample, iter_shard


class InputError(BuildSetupError):
    pass


def _shards_of(path: Path) -> list[tuple[Path, int | None]]:
    if not path.exists():
        raise InputError(f"no shards found: {path} does not exist (a build reads the previous pipeline's final "
                         "stage in the same build folder, e.g. curate's `validate` for select, or the shards named "
                         "by its `input`)")
    if path.is_dir() and (path / MANIFEST).exists():
        found = []
        for line in (path / MANIFEST).read_text().splitlines():
            try:
                e = json.loads(line)
            except json.JSONDecodeError:
                continue
            if (e.get("shard") or "").endswith(".tar"):  # parts that kept no sample have no shard
                found.append((e["part"], path / e["shard"], e.get("count")))
        return [(p, n) for _, p, n in sorted(found, key=lambda t: t[0])]
    if path.is_dir():
        return [(p, None) for p in sorted(path.glob("*.tar"))]
    return [(path, None)]


def plan_parts(sources: list[Path]) -> list[dict[str, Any]]:
    shards = [s for src in sources for s in _shards_of(Path(src))]
    if not shards:
        raise InputError(f"no shards found in {[str(s) for s in sources]} (a stage folder with {MANIFEST}, "
                         "a folder of .tar files, or .tar files)")
    return [{"part": f"{i:06d}", "input": str(p), "expected": n} for i, (p, n) in enumerate(shards)]


def count_samples(parts: list[dict[str, Any]]) -> int:
    """Samples in the input: the upstream manifests' counts, or a scan of the tar headers."""
    total = 0
    for p in parts:
        if p.get("expected") is not None:
            total += p["expected"]
        else:
            total += sum(1 for s in iter_shard(p["input"]) if isinstance(s, Sample))
    return total
