"""Image-text matching data as shards: converters from the originals' formats, and a synthetic,
learnable dataset for CPU-scale runs.

A sample: `__key__` (the image id), the image (`jpg`) and/or its region features (`regions.npy`,
float32 (36, 2048) in SCAN's precomp), and `json` = {"image_id", "split", "order", "captions":
[5 strings, in the original order]}. Shards keep the split's order (`order` = the image's
position), so COCO's 5K test set stays five consecutive 1,000-image folds.
"""
from __future__ import annotations

import io
import json
import shutil
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from PIL import Image, ImageDraw

from fusionweave.pipelines.runner import PartResult, commit_part
from fusionweave.pipelines.storage.build_folder import PartEntry, StageFolder
from fusionweave.pipelines.storage.shard_sink import shard_name

CAPS = 5
KARPATHY_SPLITS = {"train": ("train", "restval"), "dev": ("val",), "test": ("test",)}


class MatchingDataError(ValueError):
    pass


def write_split(out: Path, split: str, samples: Iterator[dict[str, Any]], per_shard: int = 1000) -> dict[str, Any]:
    """Samples in order into `out/split/shard-*.tar`: a stage folder (manifest with counts,
    `_stats.json`) like any build's, so loaders and `verify` read it the same way."""
    folder = StageFolder(out, split)
    if folder.dir.exists():
        shutil.rmtree(folder.dir)  # a conversion is rewritten whole, never resumed
    folder.prepare()
    entries: list[PartEntry] = []
    batch: list[dict[str, Any]] = []

    def flush() -> None:
        entries.append(commit_part(folder, {"part": f"{len(entries):06d}"},
                                   PartResult(len(batch), ["convert"], samples=batch, name=shard_name(len(entries)))))

    for s in samples:
        batch.append(s)
        if len(batch) == per_shard:
            flush()
            batch = []
    if batch:
        flush()
    stats = folder.finish(entries)
    return {"split": split, "images": stats["rows_out"], "shards": stats["shards"]}


def _sample(image_id: str, split: str, order: int, captions: list[str], **media: Any) -> dict[str, Any]:
    if len(captions) < CAPS:
        raise MatchingDataError(f"image {image_id}: {len(captions)} captions, the protocol needs {CAPS}")
    return {"__key__": image_id, "json": {"image_id": image_id, "split": split, "order": order,
                                          "captions": [c.strip() for c in captions[:CAPS]]}, **media}


def from_karpathy(annotation: str | Path, images: str | Path, out: str | Path, per_shard: int = 1000) -> list[dict]:
    """`dataset_coco.json` / `dataset_flickr30k.json` (Karpathy splits) plus the image folder.
    COCO's `restval` joins train, as in the papers. A missing image is an error naming it."""
    doc = json.loads(Path(annotation).read_text())
    root = Path(images)
    report = []
    for split, names in KARPATHY_SPLITS.items():
        recs = [r for r in doc["images"] if r["split"] in names]

        def samples(recs: list[dict] = recs, split: str = split) -> Iterator[dict[str, Any]]:
            for order, r in enumerate(recs):
                path = root / r.get("filepath", "") / r["filename"]
                if not path.is_file():
                    raise MatchingDataError(f"{annotation}: image {path} is missing")
                caps = [s["raw"] for s in r["sentences"]]
                yield _sample(str(r.get("cocoid", r.get("imgid", order))), split, order, caps,
                              jpg=path.read_bytes())

        if recs:
            report.append(write_split(Path(out), split, samples(), per_shard))
    return report


def from_precomp(folder: str | Path, split: str, out: str | Path, per_shard: int = 1000) -> dict:
    """SCAN's precomp: `{split}_ims.npy` (N or 5N rows of 36x2048 region features; 5N repeats
    each image 5 times) and `{split}_caps.txt` (5 lines an image, in order)."""
    folder = Path(folder)
    ims = np.load(folder / f"{split}_ims.npy", mmap_mode="r")
    caps = (folder / f"{split}_caps.txt").read_text(encoding="utf-8").splitlines()
    if len(caps) % CAPS:
        raise MatchingDataError(f"{split}_caps.txt has {len(caps)} lines, not a multiple of {CAPS}")
    n = len(caps) // CAPS
    step = 5 if len(ims) == len(caps) and len(ims) != n else 1
    if len(ims) // step != n:
        raise MatchingDataError(f"{split}: {len(ims)} feature rows for {n} images")

    def samples() -> Iterator[dict[str, Any]]:
        for i in range(n):
            buf = io.BytesIO()
            np.save(buf, np.asarray(ims[i * step], np.float32))
            yield _sample(f"{split}-{i:06d}", split, i, caps[i * CAPS:(i + 1) * CAPS], **{"regions.npy": buf.getvalue()})

    return write_split(Path(out), split, samples(), per_shard)


# --- a learnable synthetic dataset ---------------------------------------------------------------
COLOURS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 80, 220), "yellow": (230, 210, 40),
           "purple": (150, 60, 190), "orange": (240, 140, 30)}
SHAPES = ("circle", "square", "triangle")
PLACES = {"top left": (0, 0), "top right": (1, 0), "bottom left": (0, 1), "bottom right": (1, 1)}
# a second look for transfer experiments: the same colour names in other shades, a 3x3 layout
PALETTES = {"primary": COLOURS,
            "muted": {"red": (170, 90, 80), "green": (110, 150, 100), "blue": (90, 110, 170),
                      "yellow": (200, 190, 110), "purple": (140, 100, 160), "orange": (200, 140, 90)}}
LAYOUTS = {"quadrants": PLACES,
           "thirds": {f"{v} {h}".strip(): (x, y) for y, v in enumerate(("top", "middle", "bottom"))
                      for x, h in enumerate(("left", "centre", "right"))}}
TEMPLATES = ("a {c} {s} in the {p}", "there is a {c} {s} at the {p}", "the {p} holds a {c} {s}",
             "{c} {s}, {p} corner", "an image with a {c} {s} in the {p} part")


def draw(objects: list[tuple[str, str, str]], size: int = 64, palette: str = "primary",
         layout: str = "quadrants") -> bytes:
    img = Image.new("RGB", (size, size), (245, 245, 245))
    d = ImageDraw.Draw(img)
    places = LAYOUTS[layout]
    cell = size // (max(x for x, _ in places.values()) + 1)
    pad = max(1, cell // 8)
    for colour, shape, place in objects:
        cx, cy = places[place]
        box = (cx * cell + pad, cy * cell + pad, cx * cell + cell - pad, cy * cell + cell - pad)
        fill = PALETTES[palette][colour]
        if shape == "circle":
            d.ellipse(box, fill=fill)
        elif shape == "square":
            d.rectangle(box, fill=fill)
        else:
            d.polygon([(box[0], box[3]), (box[2], box[3]), ((box[0] + box[2]) // 2, box[1])], fill=fill)
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def synthetic(out: str | Path, images: dict[str, int], seed: int = 0, size: int = 64,
              per_shard: int = 500, palette: str = "primary", layout: str = "quadrants") -> list[dict]:
    """Images of 1-2 coloured shapes in the cells of `layout` (quadrants or 3x3 thirds), in the
    shades of `palette`, with 5 template captions each, per split (e.g. {"train": 2000, "test":
    200}). Caption k of an image names its objects in the k-th template, so matching must read
    colour, shape and place."""
    if palette not in PALETTES or layout not in LAYOUTS:
        raise MatchingDataError(f"palette {palette!r} / layout {layout!r}: choose from {sorted(PALETTES)} / "
                                f"{sorted(LAYOUTS)}")
    cells = list(LAYOUTS[layout])
    rng = np.random.default_rng(seed)
    report = []
    for split, n in images.items():
        def samples(split: str = split, n: int = n) -> Iterator[dict[str, Any]]:
            for i in range(n):
                k = int(rng.integers(1, 3))
                places = rng.choice(cells, size=k, replace=False)
                objs = [(str(rng.choice(list(COLOURS))), str(rng.choice(SHAPES)), str(p)) for p in places]
                caps = [" and ".join(TEMPLATES[(t + j) % len(TEMPLATES)].format(c=c, s=s, p=p)
                                     for j, (c, s, p) in enumerate(objs)) for t in range(CAPS)]
                yield _sample(f"{split}-{i:06d}", split, i, caps, png=draw(objs, size, palette, layout))

        report.append(write_split(Path(out), split, samples(), per_shard))
    return report
