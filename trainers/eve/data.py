"""EVE's training data: image + conversation samples, encoded and batched, from two sources.

- Caption shards (a DenseFusion build's caption stage: an image member and a `txt` caption per
  sample) through `trainers.stream` (rank- and worker-sharded, resumable); a caption becomes
  the conversation `<image>` -> caption.
- LLaVA conversation JSON (`llava_pretrain.json`, LLaVA-665K; a `.jsonl` with one row a line too)
  with an image root, through `ConversationLoader` (seeded per-epoch shuffle split over ranks,
  resumable by `{epoch, batches}`).

A row that cannot be trained (missing or undecodable image, broken row, no or several `<image>`,
a template mismatch) is skipped and counted under its reason in the loader's `errors`; the trainer
reports them. Samples are at most `max_length` tokens with the image's tokens counted.
"""
from __future__ import annotations

import json
import math
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
import torch.utils.data as tud

from fusionweave.trainers.chat_template import TemplateMismatch, TemplateName, encode_conversation
from fusionweave.trainers.eve.config import ImageConfig
from fusionweave.trainers.eve.image import pad_batch, preprocess, num_tokens
from fusionweave.trainers.stream import IMAGE_EXTS, CorruptSample, ResumableLoader, ShardStream, epoch_batches
from fusionweave.transforms.image_validate import open_image, to_rgb

Sample = dict[str, Any]


def reject(reason: str, key: str, detail: str = "") -> CorruptSample:
    return CorruptSample(f"{key}: {reason}{': ' + detail if detail else ''}", reason=reason)


def caption_conversation(caption: str) -> list[dict[str, str]]:
    return [{"from": "human", "value": "<image>"}, {"from": "gpt", "value": caption}]


def decode_image(data: bytes, key: str) -> Any:
    try:
        with open_image(data) as im:
            rgb = to_rgb(im)
            return rgb.copy() if rgb is im else rgb  # decoded before the file closes
    except Exception as err:  # noqa: BLE001 - the sample's failure, counted
        raise reject("undecodable_image", key, f"{type(err).__name__}: {err}") from None


@dataclass(frozen=True)
class Encoder:
    """(key, image, conversations) -> a training sample; raises CorruptSample with a reason."""

    tokenizer: Any
    image_token_id: int
    image: ImageConfig
    template: TemplateName
    max_length: int
    add_bos: bool = True

    def __call__(self, key: str, image: Any, conversations: Any) -> Sample:
        im = preprocess(image, self.image.max_side, self.image.patch, self.image.mean, self.image.std)
        budget = self.max_length - (num_tokens(im.grid) - 1)  # the <image> token becomes the image's tokens
        try:
            enc = encode_conversation(conversations, self.tokenizer, self.image_token_id, budget, self.template,
                                      self.add_bos)
        except TemplateMismatch as err:
            raise reject(f"template_{err.reason}", key, str(err)) from None
        return {"__key__": key, "input_ids": enc.input_ids, "labels": enc.labels, "image": im}


def collate(samples: list[Sample]) -> dict[str, Any]:
    """The batch EveModel.forward takes: ragged ids/labels, padded pixels, grids, keys."""
    pixels, grids = pad_batch([s["image"] for s in samples])
    return {"input_ids": [s["input_ids"] for s in samples], "labels": [s["labels"] for s in samples],
            "pixels": pixels, "grids": grids, "keys": [s["__key__"] for s in samples]}


@dataclass(frozen=True)
class ShardDecoder:
    """A caption shard's raw sample (image member + `txt`) -> a training sample."""

    encoder: Encoder

    def __call__(self, raw: Sample) -> Sample:
        key = raw["__key__"]
        ext = next((e for e in IMAGE_EXTS if e in raw), None)
        if ext is None:
            raise reject("no_image", key)
        caption = raw.get("txt", b"").decode("utf-8", "replace").strip()
        if not caption:
            raise reject("no_caption", key)
        return self.encoder(key, decode_image(raw[ext], key), caption_conversation(caption))


def shard_loader(paths: list[str | Path], encoder: Encoder, batch_size: int, rank: int = 0, world: int = 1,
                 workers: int = 0, seed: int = 0, shuffle_buffer: int = 1000) -> ResumableLoader:
    stream = ShardStream(list(paths), batch_size, rank=rank, world_size=world, workers=workers, seed=seed,
                         shuffle_buffer=shuffle_buffer, decode=ShardDecoder(encoder), collate_fn=collate)
    return ResumableLoader(stream)


@dataclass(frozen=True)
class Row:
    data: Any  # the parsed row, or None for a line that is not JSON
    root: Path  # where its image path is relative to


def read_rows(path: Path, image_root: Path) -> list[Row]:
    """A JSON array of rows, or JSON Lines (a line that does not parse is kept, to be counted)."""
    if not path.is_file():
        raise FileNotFoundError(f"conversation file {path} does not exist")
    if path.suffix == ".jsonl":
        rows = []
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                try:
                    rows.append(Row(json.loads(line), image_root))
                except json.JSONDecodeError:
                    rows.append(Row(None, image_root))
        return rows
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not JSON ({err}); a file with one row a line should end in .jsonl") from None
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON array of LLaVA rows, got {type(data).__name__}")
    return [Row(r, image_root) for r in data]


def row_sample(row: Row, index: int, encoder: Encoder) -> Sample:
    r = row.data
    if not isinstance(r, dict) or not isinstance(r.get("conversations"), list):
        raise reject("broken_row", f"row {index}")
    key = str(r.get("id", f"row {index}"))
    image = r.get("image")
    if not isinstance(image, str) or not image:
        raise reject("no_image", key, "text-only rows are not trained (one image per sample)")
    path = row.root / image
    if not path.is_file():
        raise reject("missing_image_file", key, str(path))
    return encoder(key, decode_image(path.read_bytes(), key), r["conversations"])


class _RowBatches(tud.IterableDataset):
    """Batches `start, start+1, ...` of one epoch; DataLoader worker w makes every W-th from
    `start + w`, so the DataLoader's round-robin collection yields them in order."""

    def __init__(self, loader: "ConversationLoader", start: int):
        self.loader, self.start = loader, start

    def __iter__(self) -> Iterator[tuple[dict[str, Any], dict[str, int]]]:
        info = tud.get_worker_info()
        w, n = (0, 1) if info is None else (info.id, info.num_workers)
        for b in range(self.start + w, len(self.loader), n):
            yield self.loader.batch(b)


class ConversationLoader:
    """Resumable batches of LLaVA conversation rows for one rank."""

    def __init__(self, rows: list[Row], encoder: Encoder, batch_size: int, rank: int = 0, world: int = 1,
                 workers: int = 0, seed: int = 0, collate_fn: Callable[[list[Sample]], Any] = collate):
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} is not in a world of {world}")
        self.per_rank = len(rows) // world  # every rank the same number of rows (and batches)
        if self.per_rank == 0:
            raise ValueError(f"{len(rows)} rows cannot be split over {world} ranks")
        self.rows, self.encoder, self.batch_size = rows, encoder, batch_size
        self.rank, self.world, self.workers, self.seed = rank, world, workers, seed
        self.collate_fn = collate_fn
        self.epoch, self.batches_done = 0, 0
        self.errors: Counter = Counter()
        self._order: tuple[int, list[int]] = (-1, [])

    @classmethod
    def from_files(cls, sources: list[tuple[Path, Path]], encoder: Encoder, batch_size: int,
                   **kwargs: Any) -> "ConversationLoader":
        return cls([r for path, root in sources for r in read_rows(Path(path), Path(root))], encoder, batch_size,
                   **kwargs)

    def __len__(self) -> int:
        return math.ceil(self.per_rank / self.batch_size)

    def order(self) -> list[int]:
        """This rank's row indices for the current epoch (computed once per epoch)."""
        if self._order[0] != self.epoch:
            idx = list(range(len(self.rows)))
            random.Random(f"{self.seed}:{self.epoch}").shuffle(idx)
            self._order = (self.epoch, idx[self.rank * self.per_rank:(self.rank + 1) * self.per_rank])
        return self._order[1]

    def batch(self, b: int) -> tuple[dict[str, Any], dict[str, int]]:
        """Batch `b` of the epoch and the rejects met making it. Rejected rows leave it smaller; if
        all are rejected, rows of the following batches fill in (deterministic, so resume-safe)."""
        order, errors, samples = self.order(), Counter(), []
        for k in range(len(self)):
            lo = ((b + k) % len(self)) * self.batch_size
            for i in order[lo:lo + self.batch_size]:
                try:
                    samples.append(row_sample(self.rows[i], i, self.encoder))
                except CorruptSample as err:
                    if k == 0:  # rows borrowed from later batches are counted there
                        errors[err.reason] += 1
            if samples:
                if k:
                    errors["batch_refilled"] += 1
                return self.collate_fn(samples), dict(errors)
        raise RuntimeError(f"rank {self.rank}: no usable row in {self.per_rank} ({dict(errors)})")

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return epoch_batches(self, lambda: _RowBatches(self, self.batches_done))

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "batches": self.batches_done}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.batches_done = int(state["epoch"]), int(state["batches"])


def loader_errors(loader: Any) -> dict[str, int]:
    """The rejects a loader counted so far, by reason."""
    errors = loader.stream.errors if isinstance(loader, ResumableLoader) else loader.errors
    return dict(sorted(errors.items()))


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    move = lambda v: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v  # noqa: E731
    return {k: [move(x) for x in v] if isinstance(v, list) else move(v) for k, v in batch.items()}
