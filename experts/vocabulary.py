"""Tag vocabularies. The default is COCO's 80 plus LVIS's 1,203 category names, read from the
dataset files ultralytics ships (no download), de-duplicated, underscores as spaces."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from fusionweave.experts.expert import ExpertError

DEFAULT = "coco+lvis"


@lru_cache(maxsize=None)
def _ultralytics_names(dataset: str) -> tuple[str, ...]:
    import importlib.util

    import yaml

    # located, not imported: importing ultralytics patches PIL.Image.open process-wide
    spec = importlib.util.find_spec("ultralytics")
    if spec is None or not spec.submodule_search_locations:
        raise ExpertError(f"tag vocabulary {dataset!r} is read from the ultralytics package, which is not installed")
    root = Path(list(spec.submodule_search_locations)[0])
    names = yaml.safe_load((root / "cfg" / "datasets" / f"{dataset}.yaml").read_text())["names"]
    return tuple(names[i] for i in sorted(names))


def clean(tag: str) -> str:
    return " ".join(tag.replace("_", " ").split())


def load(spec: str | Path = DEFAULT) -> list[str]:
    """`coco`, `lvis`, `coco+lvis`, or a text file with one tag per line (# comments)."""
    if str(spec) in ("coco", "lvis", "coco+lvis"):
        # LVIS lists synonyms as "a/b/c": the first is the category's name
        raw = [n.split("/", 1)[0] for d in str(spec).split("+") for n in _ultralytics_names(d)]
    else:
        path = Path(spec)
        if not path.is_file():
            raise ExpertError(f"tag vocabulary {spec!r}: no such file (or use coco, lvis, coco+lvis)")
        raw = [line.split("#", 1)[0] for line in path.read_text(encoding="utf-8").splitlines()]
    seen: dict[str, str] = {}
    for tag in raw:
        t = clean(tag)
        if t and t.lower() not in seen:
            seen[t.lower()] = t
    if not seen:
        raise ExpertError(f"tag vocabulary {spec!r} is empty")
    return list(seen.values())
