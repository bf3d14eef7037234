"""Read WebDataset shards defensively: members are bytes (never unpickled), unsafe member
names are refused, links are never followed, a key is one sample per shard, and a truncated
or corrupt tar ends with a record instead of a crash. Plain and compressed tars read alike."""
from __future__ import annotations

import json
import posixpath
import re
import tarfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Iterator

from fusionweave.pipelines.storage import store
from fusionweave.pipelines.storage.location import Loc, ObjectPath, location

# what tarfile's stream mode opens transparently; a folder's shards are the files named so
SHARD_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")
# webdataset's own metadata members (`__info__.json`, ...) are not samples: its readers skip them too
META_MEMBER = re.compile(r"__[^/]*__($|/)")
READ_ERRORS = (tarfile.TarError, OSError, EOFError, zlib.error)


# WebDataset's naming convention, as its readers (and Ray Data's, and `datasets`') split a member
# name: the key runs to the first dot of the last path component, the extension is the rest
# (tests/test_lean_import.py checks it against webdataset's own function on awkward names).
# Written here because importing webdataset's reader imports torch.
MEMBER_NAME = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")


def key_and_ext(name: str) -> tuple[str | None, str | None]:
    """A member name split as webdataset splits it (`a/b.c.d` -> `a/b`, `c.d`)."""
    m = MEMBER_NAME.match(name)
    return (m.group(1), m.group(2)) if m else (None, None)


class UnsupportedShard(ValueError):
    pass


def check_shard_name(path: Loc) -> None:
    """Refuse a tar compressed in a form tarfile cannot stream (`.tar.zst`, ...): refused alike
    whether named alone or found in a folder, rather than read as broken or skipped."""
    name = path.name
    if ".tar." in name and not name.endswith(SHARD_SUFFIXES):
        raise UnsupportedShard(f"{path}: compressed as {name.split('.tar.', 1)[1]!r}, which is not read; shards "
                               f"are {', '.join(SHARD_SUFFIXES)} (recompress it, e.g. as .tar.gz)")


def shards_in(folder: str | Path | ObjectPath) -> list[Loc]:
    """The shard files directly in `folder`, by name: every form `iter_shard` reads, so a folder
    and a list of its files give the same input. Raises UnsupportedShard for one it cannot read."""
    found = []
    base = location(folder)
    for name in sorted(store.files(base)):
        if store.is_tmp(name):  # an interrupted write's temporary, not a shard
            continue
        p = base / name
        check_shard_name(p)
        if name.endswith(SHARD_SUFFIXES):
            found.append(p)
    return found


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


@dataclass
class _Open:
    """The sample being read; a refusal marks all of it, since part of a sample is not the sample."""

    key: str
    members: dict[str, bytes] = field(default_factory=dict)
    refusal: Broken | None = None

    def refuse(self, reason: str, detail: str) -> None:
        if self.refusal is None:  # the first problem names it
            self.refusal = Broken(self.key, reason, detail)

    def close(self) -> Sample | Broken:
        return self.refusal or Sample(self.key, self.members)


def unsafe_member(name: str) -> bool:
    if name.startswith("/") or "\\" in name or "\x00" in name:
        return True
    norm = posixpath.normpath(name)
    return norm.startswith("..") or "/../" in f"/{name}/"


def not_regular(info: tarfile.TarInfo) -> tuple[str, str] | None:
    """(reason, detail) for a member that is not file data, which is never followed or read."""
    if info.isreg():
        return None
    if info.issym() or info.islnk():
        kind = "symlink" if info.issym() else "hardlink"
        return "link_member", f"{info.name!r} is a {kind} to {info.linkname[:200]!r}; links are never followed"
    return "special_member", f"{info.name!r} is not file data (tar type {info.type!r}: a device, fifo or unknown)"


class TruncatedTar(tarfile.TarError):
    pass


class _EndChecked(tarfile.TarInfo):
    """tarfile takes a header that is missing, cut short or garbled (after the first) as the end
    of the archive, so a tar or .tar.gz cut at a member boundary would lose its tail without a
    word. Here only the end-of-archive block ends a tar; anything else is a broken tar."""

    @classmethod
    def fromtarfile(cls, tf: tarfile.TarFile) -> tarfile.TarInfo:
        try:
            return super().fromtarfile(tf)
        except (tarfile.EmptyHeaderError, tarfile.TruncatedHeaderError, tarfile.InvalidHeaderError) as err:
            raise TruncatedTar(f"{err} at byte {tf.offset}, before the end-of-archive block") from None


def _members(f: IO[bytes]) -> Iterator[tuple[tarfile.TarInfo, bytes | None]]:
    """Every member but folders and webdataset metadata, with its bytes (None: not a regular file)."""
    with tarfile.open(fileobj=f, mode="r|*", tarinfo=_EndChecked) as tf:
        for info in tf:
            if info.isdir() or META_MEMBER.match(info.name):
                continue
            data = tf.extractfile(info).read() if info.isreg() else None  # type: ignore[union-attr]
            yield info, data
            tf.members = []  # stream mode would keep every header otherwise


def iter_tar(f: IO[bytes]) -> Iterator[Sample | Broken]:
    """Samples grouped by key, in tar order, from an open tar stream (plain or compressed).
    Members named `../x` or `/x` become Broken; a sample holding a link or device, or whose key
    already had a sample earlier in the tar (the first is kept), becomes one Broken; a tar that
    breaks ends with a Broken keyed "" (after one for the sample it broke in)."""
    current: _Open | None = None
    seen: set[str] = set()
    broke: str | None = None
    try:
        for info, data in _members(f):
            fname = info.name
            if unsafe_member(fname):
                yield Broken(key=fname, reason="unsafe_member_name", detail=f"member {fname!r} refused")
                continue
            prefix, suffix = key_and_ext(fname)
            if prefix is None or not suffix:
                yield Broken(key=fname, reason="malformed_member_name", detail=f"member {fname!r} has no key.ext form")
                continue
            if current is None or current.key != prefix:
                if current is not None:
                    yield current.close()
                current = _Open(prefix)
                if prefix in seen:
                    current.refuse("duplicate_key", f"{prefix} had a sample earlier in this tar; the first is kept")
                seen.add(prefix)
            if (bad := not_regular(info)) is not None:
                current.refuse(*bad)
            elif suffix in current.members:
                yield Broken(key=prefix, reason="duplicate_member", detail=f"{prefix}.{suffix} appears twice")
            else:
                current.members[suffix] = data  # type: ignore[assignment]
    except READ_ERRORS as err:
        if isinstance(err, store.StorageError):
            raise
        broke = f"{type(err).__name__}: {err}"[:300]
    if broke is not None:
        # the sample being read when the tar broke may be incomplete: it is not trusted
        if current is not None:
            yield Broken(key=current.key, reason="broken_tar", detail=broke)
            current = None
        yield Broken(key="", reason="broken_tar", detail=broke)
    if current is not None:
        yield current.close()


def iter_shard(path: str | Path | ObjectPath) -> Iterator[Sample | Broken]:
    """`iter_tar` over a shard file; a file that cannot be opened is one `broken_tar` record.
    A store that fails (unreachable, refused) raises: that is not the shard's fault."""
    try:
        f = store.open_input(location(path))
    except store.StorageError:
        raise
    except OSError as err:
        yield Broken(key="", reason="broken_tar", detail=f"{type(err).__name__}: {err}"[:300])
        return
    with f:
        yield from iter_tar(f)


READ_SHARD = "read_shard"  # the step that names what a shard could not give
IMAGE_EXTS = ("jpg", "jpeg", "png", "webp", "gif", "bmp", "tiff", "avif", "bin")


@dataclass
class ImageSample:
    """A sample with an image member and a JSON object (possibly empty) as metadata."""

    key: str
    index: int  # position in the shard
    image_ext: str
    members: dict[str, bytes]
    meta: dict


def image_sample(item: Sample, index: int) -> ImageSample | dict:
    """`item` as an ImageSample, or the reject row of what it lacks."""
    img_ext = next((e for e in IMAGE_EXTS if e in item.members), None)
    try:
        meta = json.loads(item.members.get("json", b"{}"))
        if not isinstance(meta, dict):
            raise ValueError("json member is not an object")
    except ValueError as err:
        return {"key": item.key, "step": READ_SHARD, "reason": "malformed_json", "detail": str(err)[:200]}
    if img_ext is None:
        return {"key": item.key, "step": READ_SHARD, "reason": "missing_image", "url": meta.get("url"),
                "detail": f"members: {sorted(item.members)}"}
    return ImageSample(item.key, index, img_ext, item.members, meta)


def iter_image_samples(path: str | Path | ObjectPath, expected: int | None = None) -> Iterator[ImageSample | dict]:
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
                yield {"key": item.key, "step": READ_SHARD, "reason": item.reason, "detail": item.detail}
            continue
        index, seen = seen, seen + 1
        yield image_sample(item, index)
    if broken_tar is not None:
        missing = max(0, (expected or 0) - seen)
        stem = location(path).stem
        for i in range(max(missing, 1 if expected is None else 0)):
            yield {"key": f"{stem}#missing-{i}", "step": READ_SHARD, "reason": "broken_tar",
                   "detail": broken_tar.detail}
