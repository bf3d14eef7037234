"""What a dataset's samples look like and what they contain, read from its shards."""
from __future__ import annotations

import json
from collections import Counter
from typing import Any, Iterator

from fusionweave.pipelines.storage.location import Loc
from fusionweave.pipelines.storage.shard_source import Sample, iter_shard

MEMBER_KINDS = {"jpg": "image (JPEG)", "jpeg": "image (JPEG)", "png": "image (PNG)", "webp": "image (WebP)",
                "txt": "string (UTF-8)", "json": "JSON object", "experts.json": "JSON object",
                "depth.png": "image (16-bit PNG)", "npy": "NumPy array", "flac": "audio (FLAC)", "mp4": "video (MP4)"}


def iter_samples(shards: list[Loc]) -> Iterator[Sample]:
    for s in shards:
        for item in iter_shard(s):
            if isinstance(item, Sample):
                yield item


def json_fields(obj: Any, prefix: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(obj, dict):
        for k, v in obj.items():
            name = f"{prefix}.{k}" if prefix else k
            if isinstance(v, dict) and v:
                yield from json_fields(v, name)
            else:
                yield name, _type(v)
    else:
        yield prefix or "(value)", _type(obj)


def _type(v: Any) -> str:
    return {bool: "bool", int: "int", float: "float", str: "string", list: "list", dict: "object",
            type(None): "null"}.get(type(v), type(v).__name__)


def describe(shards: list[Loc], limit: int = 200) -> dict[str, Any]:
    """Member extensions with kinds, and every JSON field with the types seen in `limit` samples."""
    members: Counter = Counter()
    fields: dict[str, dict[str, set[str]]] = {}
    n = 0
    for s in iter_samples(shards):
        n += 1
        for ext, data in s.members.items():
            members[ext] += 1
            if ext.endswith("json"):
                try:
                    obj = json.loads(data)
                except ValueError:
                    continue
                for name, typ in json_fields(obj):
                    fields.setdefault(ext, {}).setdefault(name, set()).add(typ)
        if n >= limit:
            break
    return {"samples_read": n, "members": {ext: {"kind": MEMBER_KINDS.get(ext, "bytes"), "present_in": c}
                                           for ext, c in sorted(members.items())},
            "json_fields": {ext: {k: sorted(v - {"null"}) + (["null"] if "null" in v else []) for k, v in sorted(f.items())}
                            for ext, f in fields.items()}}


def caption_lengths_and_sizes(shards: list[Loc], limit: int = 100_000) -> tuple[list[int], list[tuple[int, int]]]:
    """Caption lengths in words (from `txt`) and image sizes (from `json` width/height)."""
    words, sizes = [], []
    for i, s in enumerate(iter_samples(shards)):
        if i >= limit:
            break
        if "txt" in s.members:
            words.append(len(s.members["txt"].decode("utf-8", "replace").split()))
        if "json" in s.members:
            try:
                meta = json.loads(s.members["json"])
                if isinstance(meta.get("width"), int) and isinstance(meta.get("height"), int):
                    sizes.append((meta["width"], meta["height"]))
            except ValueError:
                pass
    return words, sizes
