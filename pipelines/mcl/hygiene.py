"""Split hygiene before any media is processed: every annotation must find its file (else a
`missing_media` reject carrying the path: the missing-media manifest), and no media item may
serve both a training split and an evaluation split of the same modality (the training record
is the reject: evaluation sets stay as published). A media item is its file's content (sha256,
so copies under other names are caught) or, with `duplicates: path`, its real path."""
from __future__ import annotations

import hashlib
import os
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable

from fusionweave.transforms.mcl.record import Record


def reject(rec: Record, step: str, reason: str, detail: str) -> dict[str, Any]:
    return {"key": rec.key, "step": step, "reason": reason, "detail": detail, "source": rec.source,
            "modality": rec.modality, "split": rec.split}


def missing_media(records: list[Record], roots: dict[str, Path],
                  follow_outside: bool = False) -> tuple[list[Record], list[dict[str, Any]]]:
    """Absent files are `missing_media`; a path that a symlink leads out of its media root is
    `unsafe_media_path` unless `follow_outside` (dataset archives can carry symlinks)."""
    kept, rejects = [], []
    real_roots = {s: os.path.realpath(p) for s, p in roots.items()}
    for r in records:
        path = roots[r.source] / r.media
        if not path.is_file():
            rejects.append({**reject(r, "media", "missing_media", str(path)), "path": str(path)})
        elif not follow_outside and os.path.commonpath([real_roots[r.source], os.path.realpath(path)]) \
                != real_roots[r.source]:
            rejects.append(reject(r, "media", "unsafe_media_path", f"{path} leads outside {roots[r.source]}"))
        else:
            kept.append(r)
    return kept, rejects


def real_path(rec: Record, roots: dict[str, Path]) -> str:
    return os.path.realpath(roots[rec.source] / rec.media)


def needs_identity(records: list[Record]) -> list[Record]:
    """Only modalities with both training and evaluation records can leak."""
    splits: dict[str, set[bool]] = defaultdict(set)
    for r in records:
        splits[r.modality].add(r.train)
    return [r for r in records if len(splits[r.modality]) == 2]


def sha256_files(paths: list[str]) -> dict[str, str]:
    """Content digests; a file that cannot be read keeps its path as identity (reading it for
    preprocessing then makes it a `media_unreadable` reject)."""
    out = {}
    for p in paths:
        h = hashlib.sha256()
        try:
            with open(p, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
            out[p] = h.hexdigest()
        except OSError:
            out[p] = f"unreadable:{p}"
    return out


def cross_split(records: list[Record], identity: Callable[[Record], str]) -> tuple[list[Record], list[dict[str, Any]]]:
    evals: dict[tuple[str, str], list[str]] = defaultdict(list)
    ident = {r.key: (r.modality, identity(r)) for r in needs_identity(records)}
    for r in records:
        if not r.train and r.key in ident:
            evals[ident[r.key]].append(f"{r.source}/{r.split}:{r.media}")
    kept, rejects = [], []
    for r in records:
        clash = evals.get(ident[r.key]) if r.train and r.key in ident else None
        if clash:
            rejects.append(reject(r, "splits", "cross_split_duplicate",
                                  f"{r.media} is also in {sorted(set(clash))}"))
        else:
            kept.append(r)
    return kept, rejects
