"""Which samples each training rank and loader worker reads in an epoch, decided before reading.

Shards are dealt to ranks and then to workers, largest first to the least loaded, after a
seeded per-epoch shuffle of the shard list; every rank gets the same number of batches (the
smallest rank's capacity), so no rank waits at the end of an epoch for batches the others never
send. Each worker's quota of batches is fixed up front, so the order in which a torch DataLoader
collects them is known and a resumed loader can skip exactly what was consumed.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from fusionweave.pipelines.storage import store
from fusionweave.pipelines.storage.build_folder import stage_shards
from fusionweave.pipelines.storage.location import Loc, location
from fusionweave.pipelines.storage.shard_source import check_shard_name, shards_in

# read through webdataset's own openers (`gopen`), not the storage layer
WEB = ("http://", "https://", "pipe:")


@dataclass(frozen=True)
class Shard:
    url: str
    count: int


def is_web(url: str) -> bool:
    return url.startswith(WEB)


def shard_files(paths: list[str | Path]) -> list[tuple[str, int | None]]:
    """Every shard named by `paths` (stage folders, folders of shards, shard files, URIs on
    object storage, URLs and `pipe:` commands), with its count when a manifest gives it."""
    out: list[tuple[str, int | None]] = []
    for p in paths:
        if is_web(str(p)):
            out.append((str(p), None))
            continue
        try:
            out += _local_or_stored(location(p))
        except store.StorageError as err:
            raise ShardUnreadable(f"{p}: could not be read ({err.strerror})") from None
    if not out:
        raise FileNotFoundError(f"no shards (.tar, .tar.gz, ...) in {[str(p) for p in paths]}")
    return out


def _local_or_stored(path: Loc) -> list[tuple[str, int | None]]:
    if store.is_dir(path):
        stage = stage_shards(path)
        return [(str(t), n) for t, n in stage] if stage is not None else [(str(t), None) for t in shards_in(path)]
    if not store.exists(path):
        raise ShardUnreadable(f"{path}: could not be read (no such file or folder)")
    check_shard_name(path)
    return [(str(path), None)]


def shard_counts(paths: list[str | Path]) -> list[Shard]:
    """Shards with their sample counts: from a build folder's manifest when there is one, else by
    reading the tar headers (each key once; a URL or `pipe:` command read through webdataset)."""
    return [Shard(url, n if n is not None else _count_remote(url) if is_web(url) else _count_keys(location(url)))
            for url, n in shard_files(paths)]


class ShardUnreadable(OSError):
    """A shard of which not one sample can be read: training would quietly lose it."""


def _count_keys(tar: Loc) -> int:
    import tarfile

    keys = set()
    try:
        with store.open_random(tar) as f, tarfile.open(fileobj=f) as tf:
            for m in tf:
                if m.isfile():
                    keys.add(m.name.split(".", 1)[0])
    except (tarfile.TarError, OSError) as err:
        if (reason := store.failure_reason(err)) is not None:  # the store failed, not the shard
            raise ShardUnreadable(f"{tar}: could not be read ({reason})") from None
        if not keys:
            raise ShardUnreadable(f"{tar}: not a readable tar ({type(err).__name__}: {err})") from None
        # a tar broken part-way counts what could be read; the loader counts the break (broken_tar)
    return len(keys)


def _count_remote(url: str) -> int:
    from webdataset.tariterators import group_by_keys, tar_file_expander, url_opener

    def reraise(err: Exception) -> bool:
        raise err

    try:
        n = sum(1 for _ in group_by_keys(tar_file_expander(url_opener([{"url": url}], handler=reraise),
                                                           handler=reraise), handler=reraise))
    except Exception as err:  # noqa: BLE001 - whatever the opener raised, the shard is unreadable
        raise ShardUnreadable(f"{url}: could not be read ({type(err).__name__}: {str(err)[:200]})") from None
    if n == 0:
        raise ShardUnreadable(f"{url}: no samples could be read")
    return n


def deal(shards: list[Shard], bins: int) -> list[list[Shard]]:
    """Largest shard first to the bin with the fewest samples (ties: the lower bin)."""
    out: list[list[Shard]] = [[] for _ in range(bins)]
    load = [0] * bins
    for s in sorted(shards, key=lambda s: -s.count):
        i = min(range(bins), key=lambda b: (load[b], b))
        out[i].append(s)
        load[i] += s.count
    return out


@dataclass(frozen=True)
class WorkerPlan:
    shards: tuple[Shard, ...]
    batches: int  # exactly this many batches, then stop


def plan_epoch(shards: list[Shard], world_size: int, workers: int, batch_size: int, seed: int,
               epoch: int) -> list[list[WorkerPlan]]:
    """plan[rank][worker]. Every rank gets the same total number of batches."""
    order = list(shards)
    random.Random(f"{seed}:{epoch}").shuffle(order)
    per_rank = deal(order, world_size)
    per_worker = [deal(r, max(1, workers)) for r in per_rank]
    capacity = [[sum(s.count for s in w) // batch_size for w in r] for r in per_worker]
    equal = min(sum(c) for c in capacity)
    plans = []
    for r, caps in zip(per_worker, capacity):
        quota, left = [0] * len(caps), equal
        while left:  # one batch at a time to the worker with the most spare capacity
            i = max(range(len(caps)), key=lambda w: (caps[w] - quota[w], -w))
            quota[i] += 1
            left -= 1
        plans.append([WorkerPlan(tuple(sorted(ws, key=lambda s: s.url)), q) for ws, q in zip(r, quota)])
    return plans


def collection_order(quotas: list[int]) -> list[int]:
    """The worker each successive batch comes from, as a torch DataLoader collects them: round
    robin over the workers, skipping those that have sent their quota."""
    left = list(quotas)
    order = []
    w = 0
    while any(left):
        if left[w]:
            order.append(w)
            left[w] -= 1
        w = (w + 1) % len(left)
    return order


def consumed_per_worker(quotas: list[int], batches_done: int) -> list[int]:
    done = [0] * len(quotas)
    for w in collection_order(quotas)[:batches_done]:
        done[w] += 1
    return done
