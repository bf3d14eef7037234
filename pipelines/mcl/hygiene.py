"""Split hygiene before any media is processed: every annotation must find its file (else a
`missing_media` reject carrying the path: the missing-media manifest), and no media file may
serve both a training split and an evaluation split of the same modality (the training record
is the reject: evaluation sets stay as published)."""
from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path
from typing import Any

from transforms.mcl.record import Record


def reject(rec: Record, step: str, reason: str, detail: str) -> dict[str, Any]:
    return {"key": rec.key, "step": step, "reason": reason, "detail": detail, "source": rec.source,
            "modality": rec.modality, "split": rec.split}


def missing_media(records: list[Record], roots: dict[str, Path]) -> tuple[list[Record], list[dict[str, Any]]]:
    kept, rejects = [], []
    for r in records:
        path = roots[r.source] / r.media
        if path.is_file():
            kept.append(r)
        else:
            rejects.append({**reject(r, "media", "missing_media", str(path)), "path": str(path)})
    return kept, rejects


def cross_split(records: list[Record], roots: dict[str, Path]) -> tuple[list[Record], list[dict[str, Any]]]:
    """Identity is the file itself (its real path), so two sources naming one file, or a symlink
    to it, are caught."""
    evals: dict[tuple[str, str], list[str]] = defaultdict(list)
    ident = {r.key: (r.modality, os.path.realpath(roots[r.source] / r.media)) for r in records}
    for r in records:
        if not r.train:
            evals[ident[r.key]].append(f"{r.source}/{r.split}")
    kept, rejects = [], []
    for r in records:
        clash = evals.get(ident[r.key]) if r.train else None
        if clash:
            rejects.append(reject(r, "splits", "cross_split_duplicate",
                                  f"{r.media} is also in {sorted(set(clash))}"))
        else:
            kept.append(r)
    return kept, rejects
