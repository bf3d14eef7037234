"""Read a build folder lazily: stages from `build.json` and `_stats.json`, shards from each
stage's manifest, samples by the member offsets of their tar (headers are scanned once per shard,
member bytes are read with one seek), parquet shards and rejects by a key or reason filter.

Nothing here builds a path from a request: a key or member is looked up in the indexes made
from the manifests and tar headers, so a key like `../../etc/passwd` is simply not found."""
from __future__ import annotations

import json
import re
import tarfile
import threading
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from fusionweave.datasets_cards.card import build_outputs
from fusionweave.orchestration.report import collect
from fusionweave.pipelines.storage.build_folder import STATS, StageFolder
from fusionweave.pipelines.storage.shard_source import META_MEMBER, key_and_ext, unsafe_member

# what a key or a member extension may look like in a URL (anything else is not looked up)
KEY_RE = re.compile(r"^[A-Za-z0-9_\-#]{1,200}$")
EXT_RE = re.compile(r"^[A-Za-z0-9_\-]{1,40}(\.[A-Za-z0-9_\-]{1,40}){0,3}$")
STAGE_RE = re.compile(r"^[A-Za-z0-9_\-]{1,100}$")


class NotABuild(Exception):
    """OUT is missing, not a folder, or holds no finished stage."""


@dataclass(frozen=True)
class Member:
    shard: Path
    offset: int
    size: int


def open_build(out: str | Path) -> "BuildView":
    out = Path(out)
    if not out.exists():
        raise NotABuild(f"{out}: no such folder")
    if not out.is_dir():
        raise NotABuild(f"{out}: not a folder (a build folder holds build.json and one folder per stage)")
    view = BuildView(out)
    if not view.stages:
        raise NotABuild(f"{out}: not a fusionweave build folder (no build.json and no finished stage with {STATS})")
    return view


def tar_index(path: Path) -> dict[str, dict[str, Member]]:
    """key -> {ext: Member} from the tar's headers (tarfile seeks over the data). Unsafe names,
    links, devices and webdataset's own metadata members are left out; a broken tar gives what
    could be read before the break."""
    index: dict[str, dict[str, Member]] = {}
    try:
        with tarfile.open(path, mode="r:") as tf:
            while True:
                info = tf.next()
                if info is None:
                    break
                tf.members = []  # keep no headers: the index is all we need
                if not info.isreg() or META_MEMBER.match(info.name) or unsafe_member(info.name):
                    continue
                key, ext = key_and_ext(info.name)
                if key is None or not ext:
                    continue
                members = index.setdefault(key, {})
                members.setdefault(ext, Member(path, info.offset_data, info.size))
    except (tarfile.TarError, OSError, EOFError):
        pass
    return index


def read_member(m: Member) -> bytes:
    with open(m.shard, "rb") as f:
        f.seek(m.offset)
        return f.read(m.size)


class BuildView:
    def __init__(self, out: Path):
        self.out = Path(out).resolve()
        build_path = self.out / "build.json"
        try:
            self.build: dict[str, Any] = json.loads(build_path.read_text()) if build_path.is_file() else {}
        except (OSError, ValueError):
            self.build = {}
        order = [s for _, stages, _ in build_outputs(self.build) for s in stages] if self.build else []
        self.stats: dict[str, dict[str, Any]] = {
            k: v for k, v in collect(self.out, order).items() if STAGE_RE.match(k)}
        self.stages: list[str] = list(self.stats)
        self._lock = threading.Lock()
        self._tar_cache: dict[Path, dict[str, dict[str, Member]]] = {}
        self._key_maps: dict[str, dict[str, Path]] = {}
        self._shards: dict[tuple[str, str], list[tuple[Path, int]]] = {}

    # ---- shards -------------------------------------------------------------------------
    def shards(self, stage: str, suffix: str = ".tar") -> list[tuple[Path, int]]:
        """(shard, sample count) in part order, from the stage's manifest."""
        if stage not in self.stats:
            return []
        with self._lock:
            hit = self._shards.get((stage, suffix))
        if hit is None:  # a finished stage does not change while it is viewed: read its manifest once
            folder = StageFolder(self.out, stage)
            hit = [(folder.dir / e.shard, e.count) for _, e in sorted(folder.entries().items())
                   if e.shard and e.shard.endswith(suffix)]
            with self._lock:
                self._shards[(stage, suffix)] = hit
        return hit

    def kind(self, stage: str) -> str:
        """'tar', 'parquet' or 'none' (a stage that writes other files, e.g. exports)."""
        if self.shards(stage, ".tar"):
            return "tar"
        if self.shards(stage, ".parquet"):
            return "parquet"
        return "none"

    def index(self, shard: Path) -> dict[str, dict[str, Member]]:
        with self._lock:
            hit = self._tar_cache.get(shard)
        if hit is None:
            hit = tar_index(shard)
            with self._lock:
                if len(self._tar_cache) > 256:  # bounded: a large build has many shards
                    self._tar_cache.pop(next(iter(self._tar_cache)))
                self._tar_cache[shard] = hit
        return hit

    def key_map(self, stage: str) -> dict[str, Path]:
        """key -> shard for a tar stage (all headers of the stage, once)."""
        with self._lock:
            hit = self._key_maps.get(stage)
        if hit is None:
            hit = {}
            for shard, _ in self.shards(stage, ".tar"):
                for key in self.index(shard):
                    hit.setdefault(key, shard)
            with self._lock:
                self._key_maps[stage] = hit
        return hit

    def count(self, stage: str) -> int:
        return sum(n for _, n in self.shards(stage, ".tar"))

    def page(self, stage: str, start: int, n: int) -> list[tuple[str, dict[str, Member]]]:
        """Samples start..start+n of a tar stage, reading only the shards they are in (by the
        manifest's counts)."""
        res: list[tuple[str, dict[str, Member]]] = []
        pos = 0
        for shard, count in self.shards(stage, ".tar"):
            if pos + count <= start:
                pos += count
                continue
            for key, members in self.index(shard).items():
                if pos >= start:
                    res.append((key, members))
                    if len(res) >= n:
                        return res
                pos += 1
        return res

    def iter_samples(self, stage: str) -> Iterator[tuple[str, dict[str, Member]]]:
        for shard, _ in self.shards(stage, ".tar"):
            yield from self.index(shard).items()

    def members(self, stage: str, key: str) -> dict[str, Member] | None:
        if stage not in self.stats or not KEY_RE.match(key):
            return None
        shard = self.key_map(stage).get(key)
        return self.index(shard).get(key) if shard is not None else None

    def member(self, stage: str, key: str, ext: str) -> bytes | None:
        members = self.members(stage, key)
        if not members or ext not in members:
            return None
        return read_member(members[ext])

    def sample(self, stage: str, key: str) -> dict[str, Any] | None:
        """A tar sample's decoded metadata: json, experts.json, txt, src.jsonl rows and the list
        of its members (bytes of images and arrays are fetched on their own)."""
        members = self.members(stage, key)
        if members is None:
            return None
        return decode_sample(stage, key, members)

    def parquet_row(self, stage: str, key: str) -> dict[str, Any] | None:
        files = [p for p, _ in self.shards(stage, ".parquet")]
        if not files or not KEY_RE.match(key):
            return None
        for f in files:
            t = pq.read_table(f, filters=[("key", "=", key)])
            if t.num_rows:
                return plain_row(t)
        return None

    def column_of(self, stage: str, column: str, keys: list[str]) -> dict[str, Any]:
        """key -> `column` for these keys, from a parquet stage (one filtered read per shard)."""
        found: dict[str, Any] = {}
        if not keys:
            return found
        for f, _ in self.shards(stage, ".parquet"):
            try:
                t = pq.read_table(f, columns=["key", column], filters=[("key", "in", list(set(keys)))])
            except (KeyError, pa.ArrowInvalid):
                return found
            found.update(zip(t.column("key").to_pylist(), t.column(column).to_pylist()))
        return found

    def parquet_keys(self, stage: str) -> list[str]:
        out: list[str] = []
        for f, _ in self.shards(stage, ".parquet"):
            try:
                out += pq.read_table(f, columns=["key"]).column("key").to_pylist()
            except (KeyError, pa.ArrowInvalid):
                pass
        return out

    # ---- rejects ------------------------------------------------------------------------
    def reject_files(self, stage: str) -> list[Path]:
        d = self.out / stage / "_rejects"
        return sorted(d.glob("*.parquet")) if stage in self.stats and d.is_dir() else []

    def rejects(self, stage: str, *, key: str | None = None, reason: str | None = None,
                limit: int | None = None) -> list[dict[str, Any]]:
        filters = []
        if key is not None:
            filters.append(("key", "=", key))
        if reason is not None:
            filters.append(("reason", "=", reason))
        rows: list[dict[str, Any]] = []
        for f in self.reject_files(stage):
            t = pq.read_table(f, filters=filters or None)
            rows += t.to_pylist()
            if limit is not None and len(rows) >= limit:
                return rows[:limit]
        return rows

    def reject_keys(self, stage: str) -> list[str]:
        out: list[str] = []
        for f in self.reject_files(stage):
            out += pq.read_table(f, columns=["key"]).column("key").to_pylist()
        return out

    def all_keys(self) -> set[str]:
        keys: set[str] = set()
        for stage in self.stages:
            kind = self.kind(stage)
            if kind == "tar":
                keys.update(self.key_map(stage))
            elif kind == "parquet":
                keys.update(self.parquet_keys(stage))
            keys.update(self.reject_keys(stage))
        return keys

    @cached_property
    def tar_stages(self) -> list[str]:
        return [s for s in self.stages if self.kind(s) == "tar"]

    def has_build_json(self) -> bool:
        return bool(self.build)


def plain_row(t: pa.Table) -> dict[str, Any]:
    """The first row without binary columns (embeddings), values as plain Python."""
    keep = [n for n, f in zip(t.column_names, t.schema) if not (pa.types.is_binary(f.type) or
                                                             pa.types.is_fixed_size_binary(f.type) or
                                                             pa.types.is_large_binary(f.type))]
    return t.select(keep).slice(0, 1).to_pylist()[0]


def _json(raw: bytes | None) -> Any:
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


def decode_sample(stage: str, key: str, members: dict[str, Member]) -> dict[str, Any]:
    small = {ext: read_member(m) for ext, m in members.items()
             if ext in ("json", "experts.json", "txt", "src.jsonl") and m.size <= 4 << 20}
    src = []
    for line in (small.get("src.jsonl") or b"").decode("utf-8", "replace").splitlines():
        if (row := _json(line.encode())) is not None:
            src.append(row)
    return {
        "stage": stage,
        "key": key,
        "members": {ext: m.size for ext, m in members.items()},
        "json": _json(small.get("json")),
        "experts": _json(small.get("experts.json")),
        "txt": small["txt"].decode("utf-8", "replace") if "txt" in small else None,
        "src": src,
    }


def image_ext(members: dict[str, Any]) -> str | None:
    for ext in ("jpg", "jpeg", "png", "webp", "gif", "bmp", "f0.jpg"):
        if ext in members:
            return ext
    return None


__all__ = ["BuildView", "Member", "NotABuild", "open_build", "tar_index", "read_member", "image_ext"]
