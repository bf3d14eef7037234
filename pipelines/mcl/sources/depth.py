"""Depth sources (RGB images whose depth the depth expert predicts): CC3M captions in LLaVA's
CC3M-595K `chat.json` form (or `{image, caption}` entries), LLaVA-Instruct-150K conversations,
and scene-classification labels for NYU-Depth-v2 (10 classes) and SUN-RGBD (19 classes) as an
`image, scene` CSV with the class names."""
from __future__ import annotations

from typing import Any, Iterator

from pipelines.mcl.sources.audio import csv_export, csv_source
from pipelines.mcl.sources.spec import Spec
from pipelines.mcl.sources.tables import Bad, Row, as_list, json_entries, load_json, read_text, to_json

IMAGE_TOKEN = "<image>"


def turns(r: Row) -> list[tuple[str, str]]:
    """(human, gpt) pairs of a LLaVA conversation, the image token removed."""
    conv = r["conversations"]
    pairs = []
    for h, g in zip(conv[0::2], conv[1::2]):
        if h.get("from") != "human" or g.get("from") != "gpt":
            raise ValueError("conversation turns must alternate human, gpt")
        pairs.append((h["value"].replace(IMAGE_TOKEN, "").strip(), g["value"].strip()))
    if not pairs:
        raise ValueError("empty conversation")
    return pairs


def llava_rows(src: Any) -> Iterator[Row | Bad]:
    data = load_json(src.annotations, f"{src.name}.annotations")
    yield from json_entries(as_list(data, src.annotations, src.name), src.annotations, ("image",))


def caption(r: Row) -> list[str]:
    return [r["caption"]] if "caption" in r else [turns(r)[0][1]]


def llava_export(src: Any, rows: list[Row]) -> dict[str, bytes]:
    return {f"{src.name}.json": to_json(rows)}


def scene_classes(src: Any) -> list[str]:
    if src.classes:
        return list(src.classes)
    return [ln.strip() for ln in read_text(src.labels, f"{src.name}.labels").splitlines() if ln.strip()]


SPECS = {
    "cc3m": Spec("depth", "caption", llava_rows, "{image}", caption, llava_export,
                 identity=lambda r: str(r.get("id", ""))),
    "llava_instruct": Spec("depth", "qa", llava_rows, "{image}", lambda r: [turns(r)[0][1]], llava_export,
                           question=lambda r: turns(r)[0][0], identity=lambda r: str(r.get("id", ""))),
    "scene_labels": Spec("depth", "cls", csv_source(("image", "scene")), "{image}", lambda r: [r["scene"]],
                         csv_export(("image", "scene")), classes=scene_classes),
}
