"""Read WebDataset shards defensively: members are bytes (never unpickled), unsafe member
names are refused, and a truncated or corrupt tar ends with a record instead of a crash."""
from __future__ import annotations

import json
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


IMAGE_EXTS = ("jpg", "jpeg", "png", "webp", "gif", "bmp", "tiff", "avif", "bin")


@dataclass
class ImageSample:
    """A sample with an image member and a JSON object (possibly empty) as metadata."""

    key: str
    index: int  # position in the shard
    image_ext: str
    members: dict[str, bytes]
    meta: dict


def iter_image_samples(path: str | Path, expected: int | None = None) -> Iterator[ImageSample | dict]:
    """ImageSamples in tar order, and a reject row (dict: key, step, reason, detail[, url]) for
    anything that is not one. When the tar breaks, the samples the upstream manifest promised
    (`expected`) but that could not be read become `broken_tar` rejects, so counts still add up."""
    seen = 0
    broken_tar = None
    for item in iter_shard(path):
        if isinstance(item, Broken):
            if item.key == "":
                broken_tar = item
            else:
                seen += 1
                yield {"key": item.key, "step": "read_shard", "reason": item.reason, "detail": item.detail}
            continue
        index, seen = seen, seen + 1
        img_ext = next((e for e in IMAGE_EXTS if e in item.members), None)
        try:
            meta = json.loads(item.members.get("json", b"{}"))
            if not isinstance(meta, dict):
                raise ValueError("json member is not an object")
        except ValueError as err:
            yield {"key": item.key, "step": "read_shard", "reason": "malformed_json", "detail": str(err)[:200]}
            continue
        if img_ext is None:
            yield {"key": item.key, "step": "read_shard", "reason": "missing_image", "url": meta.get("url"),
                   "detail": f"members: {sorted(item.members)}"}
            continue
        yield ImageSample(item.key, index, img_ext, item.members, meta)
    if broken_tar is not None:
        missing = max(0, (expected or 0) - seen)
        stem = Path(path).stem
        for i in range(max(missing, 1 if expected is None else 0)):
            yield {"key": f"{stem}#missing-{i}", "step": "read_shard", "reason": "broken_tar",
                   "detail": broken_tar.detail}
