"""From MCL records to the LM's tokens, and the stage's batches.

A sample is `[soft prompt][<s> question][answer </s>]`; only the answer and </s> are supervised.
The question is the record's own (qa), the caption prompt (caption) or the modality's class
prompt (cls). Training targets: one of the reference captions, drawn per step (seeded); the most
frequent answer of a QA record (VQA lists ten annotators'); the class name."""
from __future__ import annotations

import itertools
import random
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

import torch

from fusionweave.trainers.mcl_stages import collate_records, decode_mcl
from fusionweave.trainers.pathweave.config import EvalConfig
from fusionweave.trainers.shard_plan import Shard, shard_files
from fusionweave.trainers.stream import CorruptSample, Mixture, raw_samples

DEFAULT_CLS_PROMPT = "what is it?"


class Prompter:
    def __init__(self, tokenizer: Any, ev: EvalConfig, max_length: int):
        self.tok, self.ev, self.max_length = tokenizer, ev, max_length

    def question(self, rec: dict[str, Any]) -> str:
        if rec["task"] == "caption":
            return self.ev.caption_prompt
        if rec["task"] == "cls":
            return self.ev.cls_prompt.get(rec["modality"], DEFAULT_CLS_PROMPT)
        return rec["question"]

    @staticmethod
    def target(rec: dict[str, Any], step: int) -> str:
        if rec["task"] == "caption":
            return random.Random(f"{rec['key']}:{step}").choice(rec["answers"])
        if rec["task"] == "qa":
            return Counter(rec["answers"]).most_common(1)[0][0]
        return rec["answers"][0]

    def prompt_ids(self, rec: dict[str, Any]) -> list[int]:
        return self.tok(self.question(rec)).input_ids

    def train_batch(self, recs: list[dict[str, Any]], step: int) -> tuple[torch.Tensor, ...]:
        """(ids, labels, attention), right-padded."""
        rows = []
        for r in recs:
            q = self.prompt_ids(r)
            a = self.tok(" " + self.target(r, step), add_special_tokens=False).input_ids + [self.tok.eos_token_id]
            ids = (q + a)[: self.max_length]
            rows.append((ids, ([-100] * len(q) + a)[: self.max_length]))
        n = max(len(i) for i, _ in rows)
        pad = self.tok.pad_token_id if self.tok.pad_token_id is not None else self.tok.eos_token_id
        ids = torch.tensor([i + [pad] * (n - len(i)) for i, _ in rows])
        labels = torch.tensor([lab + [-100] * (n - len(lab)) for _, lab in rows])
        attn = torch.tensor([[1] * len(i) + [0] * (n - len(i)) for i, _ in rows])
        return ids, labels, attn


class StageLoader:
    """A stage's mixture cut to its number of optimiser steps (the stage is one epoch of the core):
    resumable, as the mixture draws its source from the step."""

    def __init__(self, mixture: Mixture, steps: int):
        self.mixture, self.steps = mixture, steps

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[tuple[int, Any]]:
        return itertools.islice(iter(self.mixture), max(0, self.steps - self.mixture.step))

    def state_dict(self) -> dict[str, Any]:
        return {"batches": self.mixture.step, "mixture": self.mixture.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.mixture.load_state_dict(state["mixture"])


def eval_batches(build: Path, shards: list[str], batch_size: int, limit: int | None) -> Iterator[dict[str, Any]]:
    """Every sample of an eval set once, in shard order (the training stream's equal-batch plan would
    drop a remainder); corrupt samples are skipped, as the training stream does."""
    errors: Counter = Counter()
    buf: list[dict[str, Any]] = []
    seen = 0
    for url, _ in shard_files([Path(build) / s for s in shards]):
        for raw in raw_samples(Shard(url, 0), errors):
            if limit is not None and seen >= limit:
                break
            try:
                buf.append(decode_mcl(raw))
            except CorruptSample:
                continue
            seen += 1
            if len(buf) == batch_size:
                yield collate_records(buf)
                buf = []
    if buf:
        yield collate_records(buf)
