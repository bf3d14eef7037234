"""Teacher SFT rows -> LLaVA training batches for a transformers image-text-to-text model.

The text side is `chat_template.encode_conversation` (vicuna_v1: only the assistant turn and its
`</s>` are supervised; a template/tokenisation mismatch is a counted reject, never a loss-0
sample). The pixels and the number of image tokens come from the model's own processor (LLaVA:
a fixed count; LLaVA-NeXT: per image, from its any-resolution tiles), so the one `<image>` id is
expanded exactly as the processor expands it at inference.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fusionweave.trainers.caption_engine.config import EngineSetupError
from fusionweave.trainers.chat_template import IGNORE, IMAGE, TemplateMismatch, encode_conversation
from fusionweave.trainers.eve.data import ConversationLoader, Row, read_rows, reject

Sample = dict[str, Any]


@dataclass(frozen=True)
class EngineEncoder:
    """(key, image, conversations) -> a sample; raises CorruptSample with a reason."""

    processor: Any
    image_token_id: int
    max_length: int

    def pixels(self, image: Any) -> tuple[dict[str, torch.Tensor], int]:
        """The processor's image tensors and how many image tokens it expands `<image>` to."""
        enc = self.processor(images=[image], text=[image_token_of(self.processor)], return_tensors="pt")
        n = int((enc["input_ids"][0] == self.image_token_id).sum())
        return {k: v for k, v in enc.items() if k not in ("input_ids", "attention_mask", "token_type_ids")}, n

    def __call__(self, key: str, image: Any, conversations: Any) -> Sample:
        vision, n = self.pixels(image)
        if n < 1:
            raise reject("template_image_token", key, "the processor wrote no image token")
        try:
            enc = encode_conversation(conversations, self.processor.tokenizer, self.image_token_id,
                                      self.max_length - (n - 1), "vicuna_v1")
        except TemplateMismatch as err:
            raise reject(f"template_{err.reason}", key, str(err)) from None
        at = int((enc.input_ids == self.image_token_id).nonzero()[0, 0])
        fill = torch.full((n,), self.image_token_id, dtype=torch.long)
        ids = torch.cat([enc.input_ids[:at], fill, enc.input_ids[at + 1:]])
        labels = torch.cat([enc.labels[:at], torch.full((n,), IGNORE, dtype=torch.long), enc.labels[at + 1:]])
        return {"__key__": key, "input_ids": ids, "labels": labels, **{k: v[0] for k, v in vision.items()}}


def image_token_of(processor: Any) -> str:
    return getattr(processor, "image_token", None) or IMAGE


def _pad(tensors: list[torch.Tensor], value: float) -> torch.Tensor:
    """Stack, padding every dimension at the end (LLaVA-NeXT's tile counts differ per image)."""
    shape = [max(t.shape[d] for t in tensors) for d in range(tensors[0].dim())]
    out = torch.full((len(tensors), *shape), value, dtype=tensors[0].dtype)
    for i, t in enumerate(tensors):
        out[(i, *(slice(0, s) for s in t.shape))] = t
    return out


@dataclass(frozen=True)
class Collate:
    pad_id: int

    def __call__(self, samples: list[Sample]) -> dict[str, Any]:
        ids = _pad([s["input_ids"] for s in samples], self.pad_id)
        batch: dict[str, Any] = {
            "input_ids": ids, "labels": _pad([s["labels"] for s in samples], IGNORE),
            "attention_mask": _pad([torch.ones_like(s["input_ids"]) for s in samples], 0),
            "keys": [s["__key__"] for s in samples]}
        for k in samples[0]:
            if k not in batch and k not in ("__key__",) and isinstance(samples[0][k], torch.Tensor):
                batch[k] = _pad([s[k] for s in samples], 0)
        return batch


def held_out(row: Row, index: int, seed: int) -> str:
    """The sort key that picks the held-out slice: independent of row order and of the split size."""
    rid = row.data.get("id", index) if isinstance(row.data, dict) else index
    return hashlib.sha256(f"{seed}:{rid}".encode()).hexdigest()


def split_rows(sft: Path, image_root: Path, holdout: int, seed: int) -> tuple[list[Row], list[Row]]:
    """(train rows, held-out rows) of a teacher SFT file."""
    try:
        rows = read_rows(Path(sft), Path(image_root))
    except (OSError, ValueError) as err:
        raise EngineSetupError(str(err)) from None
    if holdout >= len(rows):
        raise EngineSetupError(f"data.holdout {holdout} leaves nothing to train on: {sft} has {len(rows)} rows")
    order = sorted(range(len(rows)), key=lambda i: held_out(rows[i], i, seed))
    out = set(order[:holdout])
    return [r for i, r in enumerate(rows) if i not in out], [rows[i] for i in sorted(out)]


def write_rows(rows: list[Row], path: Path) -> None:
    """LLaVA rows with their image paths made absolute (readable with any --image-root)."""
    data = []
    for r in rows:
        if isinstance(r.data, dict) and isinstance(r.data.get("image"), str):
            data.append({**r.data, "image": str((r.root / r.data["image"]).resolve())})
    path.write_text(json.dumps(data, ensure_ascii=False, indent=1))


def engine_loader(rows: list[Row], encoder: EngineEncoder, pad_id: int, batch_size: int, rank: int, world: int,
                  workers: int, seed: int) -> ConversationLoader:
    return ConversationLoader(rows, encoder, batch_size, rank=rank, world=world, workers=workers, seed=seed,
                              collate_fn=Collate(pad_id))


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items() if isinstance(v, torch.Tensor)}
