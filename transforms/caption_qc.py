"""Caption quality control: length statistics per caption and detectors for the usual failures
of captioning at scale (empty output, output cut at the token limit, repetition loops, refusals,
leaked box coordinates or "detection box" talk). Each detector is rejected, flagged or ignored by
policy; the summary compares the length distribution with DenseFusion-1M's Table 1.
"""
from __future__ import annotations

import re
import statistics
from dataclasses import dataclass
from typing import Any, Literal

import pyarrow as pa

from fusionweave.transforms.step import Filter

Action = Literal["reject", "flag", "off"]

# DenseFusion-1M, Table 1 (per caption, means)
PUBLISHED = {"1M": {"chars": 1130, "words": 191, "sentences": 11.0},
             "4V-100K": {"chars": 1253, "words": 206, "sentences": 11.2}}

_SENT = re.compile(r"[^.!?。！？]+[.!?。！？]+|[^.!?。！？]+$")
_WORD = re.compile(r"\S+")
_REFUSAL = re.compile(
    r"\b(i'?m sorry|i am sorry|i apologi[sz]e|i cannot|i can'?t (help|assist|describe|provide)|"
    r"as an ai\b|i am unable|i'?m unable|unable to (view|see|describe|process) (the|this) image)", re.I)
_BOX_NUMBERS = re.compile(r"\[\s*[01]?\.\d+\s*,\s*[01]?\.\d+\s*,\s*[01]?\.\d+\s*,\s*[01]?\.\d+\s*\]")
_BOX_WORDS = re.compile(r"\b(detection box(es)?|bounding box(es)?|external information|coordinates? \[)", re.I)


def sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENT.findall(text) if s.strip()]


def stats(text: str) -> dict[str, int]:
    return {"chars": len(text), "words": len(_WORD.findall(text)), "sentences": len(sentences(text))}


def is_repetitive(text: str, n: int = 4, min_words: int = 24, max_repeat_share: float = 0.5) -> bool:
    """A loop: the same sentence three times or more, or most word n-grams being repeats."""
    sents = [s.lower() for s in sentences(text)]
    if sents and max(sents.count(s) for s in set(sents)) >= 3:
        return True
    words = [w.lower().strip(".,;:!?") for w in _WORD.findall(text)]
    if len(words) < min_words:
        return False
    grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    return 1 - len(set(grams)) / len(grams) > max_repeat_share


@dataclass(frozen=True)
class QcPolicy:
    empty: Action = "reject"
    truncated: Action = "flag"
    repetition: Action = "reject"
    refusal: Action = "reject"
    leaked_boxes: Action = "reject"

    def check(self, text: str, finish_reason: str | None = None) -> dict[str, Any]:
        """{stats, flags: [...], reject: reason | None}; the first rejecting problem is the reason."""
        found = []
        if not text.strip():
            found.append("empty")
        else:
            if finish_reason == "length":
                found.append("truncated")
            if is_repetitive(text):
                found.append("repetition")
            if _REFUSAL.search(text):
                found.append("refusal")
            if _BOX_NUMBERS.search(text) or _BOX_WORDS.search(text):
                found.append("leaked_boxes")
        acted = [f for f in found if getattr(self, f) != "off"]
        reject = next((f for f in acted if getattr(self, f) == "reject"), None)
        return {"stats": stats(text), "flags": acted, "reject": reject}


class CaptionFailed(Filter):
    """Rows whose captioner call failed (a non-empty `error`) -> `caption_failed`, with the error."""

    name = "caption"

    def reasons(self, batch: pa.Table) -> list[str | None]:
        return ["caption_failed" if e else None for e in batch.column("error").to_pylist()]

    def details(self, batch: pa.Table) -> list[str | None]:
        return [e or None for e in batch.column("error").to_pylist()]


class CaptionQc(Filter):
    """The policy's rejecting problem of each caption (`caption`, `finish_reason`) -> `qc_<problem>`;
    flags and length statistics are read with `QcPolicy.check` where the caption is kept."""

    name = "caption_qc"

    def __init__(self, policy: QcPolicy):
        self.policy = policy

    def reasons(self, batch: pa.Table) -> list[str | None]:
        out = []
        for text, finish in zip(batch.column("caption").to_pylist(), batch.column("finish_reason").to_pylist()):
            bad = self.policy.check(text or "", finish)["reject"]
            out.append(f"qc_{bad}" if bad else None)
        return out

    def details(self, batch: pa.Table) -> list[str | None]:
        return [(t or "")[:200] for t in batch.column("caption").to_pylist()]


def summary(all_stats: list[dict[str, int]], reference: str = "1M") -> dict[str, Any]:
    """Mean and median of each length statistic, and the mean's ratio to the published one."""
    out: dict[str, Any] = {"captions": len(all_stats), "published": PUBLISHED[reference], "reference": reference}
    for k in ("chars", "words", "sentences"):
        vals = [s[k] for s in all_stats]
        mean = statistics.fmean(vals) if vals else 0.0
        out[k] = {"mean": round(mean, 1), "median": statistics.median(vals) if vals else 0,
                  "vs_published": round(mean / PUBLISHED[reference][k], 3)}
    return out
