"""Streaming WebDataset shards into training.

`ShardStream` is a torch IterableDataset that yields whole batches: shards are split over ranks
and loader workers by `shard_plan` (every rank the same number of batches), samples pass a seeded
shuffle buffer, are decoded, and corrupt ones are skipped and counted. `ResumableLoader` wraps a
torch DataLoader around it and keeps `{epoch, batches}`: restored from a checkpoint, it continues
with the next batch of the epoch, with no repeats or skips. `Mixture` draws batches from several
loaders by ratio, per iteration, resumably. `ray_batches` reads the same shards with Ray Data.
"""
from __future__ import annotations

import io
import json
import random
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch.utils.data as tud

from fusionweave.pipelines.storage import store
from fusionweave.pipelines.storage.location import ObjectPath, location
from fusionweave.trainers.shard_plan import (Shard, collection_order, consumed_per_worker, is_web, plan_epoch,
                                             shard_counts, shard_files)
from fusionweave.transforms.image_validate import open_image

Sample = dict[str, Any]
IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")


class CorruptSample(ValueError):
    """A sample a decoder cannot use; the stream skips it and counts it under `reason`."""

    def __init__(self, message: str = "", reason: str = "corrupt_sample"):
        super().__init__(message)
        self.reason = reason


def decode_sample(raw: Sample) -> Sample:
    """Members by extension: images -> uint8 CHW tensors, txt -> str, json -> dict, npy -> array,
    cls -> int; anything else stays bytes. Raises CorruptSample when a member cannot be decoded."""
    import torch

    out: Sample = {"__key__": raw["__key__"]}
    for ext, data in raw.items():
        if ext.startswith("__"):
            continue
        try:
            if ext in IMAGE_EXTS:
                with open_image(data) as im:
                    arr = np.asarray(im.convert("RGB"))
                out[ext] = torch.from_numpy(arr.copy()).permute(2, 0, 1)
            elif ext == "txt":
                out[ext] = data.decode("utf-8")
            elif ext.endswith("json"):
                out[ext] = json.loads(data)
            elif ext.endswith("npy"):
                out[ext] = np.load(io.BytesIO(data), allow_pickle=False)
            elif ext == "cls":
                out[ext] = int(data)
            else:
                out[ext] = data
        except Exception as err:  # noqa: BLE001 - the sample's failure, counted by the stream
            raise CorruptSample(f"{raw['__key__']}.{ext}: {type(err).__name__}: {err}") from None
    return out


def collate(samples: list[Sample]) -> dict[str, Any]:
    """Tensors of one shape are stacked; everything else becomes a list."""
    import torch

    out: dict[str, Any] = {}
    for k in samples[0]:
        vals = [s.get(k) for s in samples]
        if all(isinstance(v, torch.Tensor) for v in vals) and len({tuple(v.shape) for v in vals}) == 1:
            out[k] = torch.stack(vals)
        else:
            out[k] = vals
    return out


def raw_samples(shard: Shard, errors: Counter) -> Iterator[Sample]:
    """A shard's samples as raw members, read by webdataset's tar reader from the storage layer
    (local paths, object-store URIs) or its own `gopen` (`pipe:` commands, http URLs); members
    are never unpickled. A broken tar ends its shard, counted; a store that fails raises."""
    from webdataset.tariterators import group_by_keys, tar_file_expander, url_opener

    def handler(err: Exception) -> bool:
        if store.failure_reason(err) is not None:
            raise err  # the store failed, not the shard: never a quiet short epoch
        errors[f"broken_tar:{type(err).__name__}"] += 1
        return False  # stop this shard: what follows a broken header cannot be trusted

    def opened() -> Iterator[dict[str, Any]]:
        try:
            yield {"url": shard.url, "stream": store.open_input(shard.url)}
        except OSError as err:
            handler(err)

    source = url_opener([{"url": shard.url}], handler=handler) if is_web(shard.url) else opened()
    stream = group_by_keys(tar_file_expander(source, handler=handler), handler=handler)
    for sample in stream:
        if any("/" in k for k in sample if not k.startswith("__")):
            errors["unsafe_member"] += 1
            continue
        yield {k: v for k, v in sample.items() if k != "__url__" and not k.startswith("__local")}


def shuffled(items: Iterator[Sample], size: int, rng: random.Random) -> Iterator[Sample]:
    """A seeded shuffle buffer: the same seed and input give the same order."""
    if size <= 1:
        yield from items
        return
    buf: list[Sample] = []
    for x in items:
        if len(buf) < size:
            buf.append(x)
            continue
        i = rng.randrange(size)
        buf[i], x = x, buf[i]
        yield x
    rng.shuffle(buf)
    yield from buf


class ShardStream:
    """Batches for one rank. Pass `world_size`/`rank` from torch.distributed and the number of
    DataLoader workers you will use; iterate through `ResumableLoader`."""

    def __init__(self, paths: list[str | Path], batch_size: int, *, rank: int = 0, world_size: int = 1,
                 workers: int = 0, seed: int = 0, shuffle_buffer: int = 1000,
                 decode: Callable[[Sample], Sample] = decode_sample,
                 collate_fn: Callable[[list[Sample]], Any] = collate):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in a world of {world_size}")
        self.shards = shard_counts(paths)
        self.batch_size, self.rank, self.world_size = batch_size, rank, world_size
        self.workers, self.seed, self.shuffle_buffer = workers, seed, shuffle_buffer
        self.decode, self.collate_fn = decode, collate_fn
        self.epoch, self.batches_done = 0, 0
        self.errors: Counter = Counter()  # filled in-process (workers=0); workers report theirs per batch

    def plan(self) -> list[Any]:
        return plan_epoch(self.shards, self.world_size, self.workers, self.batch_size, self.seed, self.epoch)[self.rank]

    def __len__(self) -> int:
        return sum(w.batches for w in self.plan())

    def worker_batches(self, worker: int) -> Iterator[Any]:
        plans = self.plan()
        mine = plans[worker]
        skip = consumed_per_worker([w.batches for w in plans], self.batches_done)[worker]
        errors: Counter = Counter()

        def decoded(rng: random.Random) -> Iterator[Sample]:
            raw = (s for sh in mine.shards for s in raw_samples(sh, errors))
            for s in shuffled(raw, self.shuffle_buffer, rng):
                try:
                    yield self.decode(s)
                except CorruptSample as err:
                    errors[err.reason] += 1

        def padded() -> Iterator[Sample]:
            """The worker's samples; if corrupt ones leave too few for its quota, its first samples
            again (as DistributedSampler pads), so every rank still gets the same batch count."""
            n = 0
            for s in decoded(random.Random(f"{self.seed}:{self.epoch}:{self.rank}:{worker}")):
                n += 1
                yield s
            if n == 0:
                raise RuntimeError(f"rank {self.rank} worker {worker}: no usable sample in {len(mine.shards)} "
                                   f"shards ({dict(errors)})")
            while True:
                errors["padding_passes"] += 1
                yield from decoded(random.Random(f"{self.seed}:{self.epoch}:{self.rank}:{worker}"))

        if mine.batches == 0:
            return
        batch: list[Sample] = []
        made = 0
        for s in padded():
            batch.append(s)
            if len(batch) < self.batch_size:
                continue
            made += 1
            if made > skip:  # consumed before a resume: replayed, not yielded
                yield self.collate_fn(batch), dict(errors)
                errors.clear()
            batch = []
            if made == mine.batches:
                return

    def __iter__(self) -> Iterator[Any]:
        info = tud.get_worker_info()
        if info is None:
            return self.worker_batches(0)
        # a DataLoader always starts collecting at its worker 0: after a resume, its worker 0 plays
        # the plan's worker that was due next, so batches come in the uninterrupted order
        return self.worker_batches((info.id + self.first_worker()) % info.num_workers)

    def first_worker(self) -> int:
        quotas = [w.batches for w in self.plan()]
        order = collection_order(quotas)
        return order[self.batches_done] if self.batches_done < len(order) else 0


class _TorchStream(tud.IterableDataset):
    """The torch-facing IterableDataset around a ShardStream snapshot (module level, so it also
    pickles for DataLoader workers started with spawn)."""

    def __init__(self, stream: ShardStream):
        self.stream = stream

    def __iter__(self) -> Iterator[Any]:
        return iter(self.stream)


def epoch_batches(state: Any, dataset: Callable[[], tud.IterableDataset], **loader_kwargs: Any) -> Iterator[Any]:
    """The rest of the current epoch through a torch DataLoader, keeping `state`'s position:
    `state` has `epoch`, `batches_done`, `workers`, `errors` and a length in batches; `dataset()`
    (called after a finished epoch rolls over) yields `(batch, errors)` from `batches_done` on."""
    if state.batches_done >= len(state):  # the epoch was finished: go on with the next
        state.epoch, state.batches_done = state.epoch + 1, 0
    dl = tud.DataLoader(dataset(), batch_size=None, num_workers=state.workers, **loader_kwargs)
    for batch, errors in dl:
        state.batches_done += 1
        state.errors.update(errors)
        yield batch
    state.epoch, state.batches_done = state.epoch + 1, 0


class ResumableLoader:
    """A torch DataLoader over a ShardStream that knows how far the epoch got."""

    def __init__(self, stream: ShardStream, **loader_kwargs: Any):
        self.stream = stream
        self.loader_kwargs = loader_kwargs

    def __len__(self) -> int:
        return len(self.stream)

    def __iter__(self) -> Iterator[Any]:
        return epoch_batches(self.stream, lambda: _TorchStream(self.stream), **self.loader_kwargs)

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.stream.epoch, "batches": self.stream.batches_done}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.stream.epoch, self.stream.batches_done = int(state["epoch"]), int(state["batches"])


class Mixture:
    """Batches from several loaders by ratio, drawn per iteration (seeded by the step, so a
    restored mixture draws the same sources). Each source restarts on its next epoch when done."""

    def __init__(self, loaders: list[ResumableLoader], weights: list[float], seed: int = 0):
        if len(loaders) != len(weights) or not loaders or min(weights) < 0 or sum(weights) <= 0:
            raise ValueError("a mixture needs one non-negative weight per loader, not all zero")
        self.loaders, self.seed, self.step = loaders, seed, 0
        total = sum(weights)
        self.weights = [w / total for w in weights]
        self._its: list[Iterator[Any] | None] = [None] * len(loaders)
        self.drawn: Counter = Counter()

    def source(self, step: int) -> int:
        return random.Random(f"{self.seed}:{step}").choices(range(len(self.loaders)), self.weights)[0]

    def __iter__(self) -> Iterator[tuple[int, Any]]:
        while True:
            i = self.source(self.step)
            it = self._its[i]
            try:
                if it is None:
                    raise StopIteration
                batch = next(it)
            except StopIteration:
                self._its[i] = iter(self.loaders[i])
                batch = next(self._its[i])
            self.step += 1
            self.drawn[i] += 1
            yield i, batch

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step, "loaders": [ld.state_dict() for ld in self.loaders]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = int(state["step"])
        for ld, st in zip(self.loaders, state["loaders"]):
            ld.load_state_dict(st)
        self._its = [None] * len(self.loaders)


def ray_batches(paths: list[str], batch_size: int, **kwargs: Any) -> Iterator[dict[str, Any]]:
    """The same shards through Ray Data (`read_webdataset` + `iter_torch_batches`). Shards on an
    object store are read through the storage layer's filesystem (its endpoint and options)."""
    import ray

    import torch

    def to_torch(batch: dict[str, np.ndarray]) -> dict[str, Any]:
        # numeric columns become tensors; keys and text stay Python lists
        return {k: torch.from_numpy(v.copy()) if v.dtype.kind in "biufc" else list(v) for k, v in batch.items()}

    named = [str(p) for p in paths]
    stored = [location(p) for p in named if not is_web(p) and isinstance(location(p), ObjectPath)]
    if stored:
        if len(stored) != len(named) or len({p.scheme for p in stored}) > 1:
            raise ValueError("ray_batches reads shards from one object store at a time, or from local disk")
        files = [url for url, _ in shard_files(named)]  # stage folders by their manifests
        fs = store.fs_path(files[0])[0]
        kwargs = {"filesystem": fs, **kwargs}
        named = [store.fs_path(f)[1] for f in files]
    ds = ray.data.read_webdataset(named, **kwargs)
    yield from ds.iter_torch_batches(batch_size=batch_size, drop_last=False, collate_fn=to_torch)
