"""Read WebDataset shards defensively: members are bytes (never unpickled), unsafe member
names are refused, and a truncated or corrupt tar ends with a record instead of a crash."""
from __future__ import annotations

import posixpath
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from webdataset.tariterators import base_plus_ext, tar_file_iterator


@dataclass
class Sample:
    key: str
    members: dict[str, bytes] = field(default_factory=dict)


@dataclass
class Broken:
    """Something in the tar that could not become a sample."""

    key: str
    reason: str
    detail: str


def unsafe_member(name: str) -> bool:
    if name.startswith("/") or "\\" in name or "\x00" in name:
        return True
    norm = posixpath.normpath(name)
    return norm.startswith("..") or "/../" in f"/{name}/"


def iter_shard(path: str | Path) -> Iterator[Sample | Broken]:
    """Samples grouped by key, in tar order. Members named `../x` or `/x` become Broken."""
    current: Sample | None = None
    errors: list[Exception] = []

    def keep_going(exn: Exception) -> bool:
        errors.append(exn)
        return False

    try:
        with open(path, "rb") as f:
            for item in tar_file_iterator(f, handler=keep_going):
                fname = item["fname"]
                if unsafe_member(fname):
                    yield Broken(key=fname, reason="unsafe_member_name", detail=f"member {fname!r} refused")
                    continue
                prefix, suffix = base_plus_ext(fname)
                if prefix is None or not suffix:
                    yield Broken(key=fname, reason="malformed_member_name", detail=f"member {fname!r} has no key.ext form")
                    continue
                if current is not None and current.key != prefix:
                    yield current
                    current = None
                if current is None:
                    current = Sample(prefix)
                if suffix in current.members:
                    yield Broken(key=prefix, reason="duplicate_member", detail=f"{prefix}.{suffix} appears twice")
                    continue
                current.members[suffix] = item["data"]
    except (tarfile.TarError, OSError, EOFError) as err:
        errors.append(err)
    if errors:
        # the sample being read when the tar broke may be incomplete: it is not trusted
        if current is not None:
            yield Broken(key=current.key, reason="broken_tar", detail=f"{type(errors[0]).__name__}: {errors[0]}"[:300])
            current = None
        yield Broken(key="", reason="broken_tar", detail=f"{type(errors[0]).__name__}: {errors[0]}"[:300])
    if current is not None:
        yield current
