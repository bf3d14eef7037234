"""Which shards the select build reads: a stage folder (its manifest), a folder of shards (.tar,
.tar.gz, ... as `shards_in` lists them), or shard files. Parts are numbered in that order; a
part keeps its upstream sample count, so a tar that breaks later still accounts for every
sample it should hold."""
from __future__ import annotations

from typing import Any

from fusionweave.pipelines.storage import store
from fusionweave.pipelines.storage.build_folder import MANIFEST, stage_shards
from fusionweave.pipelines.storage.location import Loc, location
from fusionweave.pipelines.errors import BuildSetupError
from fusionweave.pipelines.storage.shard_source import (SHARD_SUFFIXES, Sample, UnsupportedShard, check_shard_name, iter_shard,
                                                shards_in)


class InputError(BuildSetupError):
    pass


def _shards_of(path: Loc) -> list[tuple[Loc, int | None]]:
    if not store.exists(path):
        raise InputError(f"no shards found: {path} does not exist (a build reads the previous pipeline's final "
                         "stage in the same build folder, e.g. curate's `validate` for select, or the shards named "
                         "by its `input`)")
    stage = stage_shards(path)
    if stage is not None:
        return list(stage)
    if store.is_dir(path):
        return [(p, None) for p in shards_in(path)]
    check_shard_name(path)
    return [(path, None)]


def plan_parts(sources: list[Loc]) -> list[dict[str, Any]]:
    try:
        shards = [s for src in sources for s in _shards_of(location(src))]
    except UnsupportedShard as err:
        raise InputError(str(err)) from None
    if not shards:
        named = ", ".join(f"*{s}" for s in SHARD_SUFFIXES)
        raise InputError(f"no shards found in {[str(s) for s in sources]} (a stage folder with {MANIFEST}, "
                         f"a folder of shards named {named}, or shard files)")
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
