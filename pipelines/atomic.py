"""Write-then-rename, so no partial file is ever visible under its final name."""
from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from pathlib import Path
from typing import Iterator


def tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling path; on success fsync it and rename it over `path`."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_name(final)
    try:
        yield tmp
        if tmp.exists():
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def is_tmp(name: str) -> bool:
    return name.startswith(".") and ".tmp-" in name


def clean_tmp(folder: Path) -> int:
    """Remove temporaries left by a killed run; returns how many."""
    n = 0
    if folder.exists():
        for p in folder.rglob(".*.tmp-*"):
            if p.is_file():
                p.unlink()
                n += 1
    return n


def staging_dir(final: Path) -> Path:
    """An empty `FINAL.tmp` folder to fill and then rename to `final` (a folder published whole)."""
    if final.exists():
        shutil.rmtree(final)
    tmp = final.with_name(final.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp
