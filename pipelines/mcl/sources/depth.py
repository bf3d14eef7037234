"""Depth sources (RGB images whose depth the depth expert predicts): CC3M captions in LLaVA's
CC3M-595K `chat.json` form (or `{image, caption}` entries), LLaVA-Instruct-150K conversations,
and scene-classification labels for NYU-Depth-v2 (10 classes) and SUN-RGBD (19 classes) as an
`image, scene` CSV with the class names."""
from __future__ import annotations

import json
from typing import Any, Iterator

from fusionweave.pipelines.mcl.sources.audio import csv_export, csv_source
from fusionweave.pipelines.mcl.sources.spec import Spec
from fusionweave.pipelines.mcl.sources.tables import Bad, Row, as_list, json_entries, load_json, read_text, to_json

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


def llava_turns(src: Any) -> Iterator[Row | Bad]:
    """One row per (question, answer) turn: every turn of a conversation becomes its own QA record
    (LLaVA-Instruct repeats image ids across its subsets, so the turn's text is in the identity)."""
    for i, e in enumerate(llava_rows(src)):
        if isinstance(e, Bad):
            yield e
            continue
        try:
            pairs = turns(e)
        except (KeyError, TypeError, AttributeError, ValueError) as err:
            yield Bad(f"{src.annotations}[{i}]", "malformed_row", f"conversation: {type(err).__name__}: {err}")
            continue
        for k, (q, a) in enumerate(pairs):
            yield {"entry": e, "turn": k, "question": q, "answer": a}


def caption(r: Row) -> list[str]:
    return [r["caption"]] if "caption" in r else [turns(r)[0][1]]


def llava_export(src: Any, rows: list[Row]) -> dict[str, bytes]:
    """The conversations as read, each once (a conversation's turns are separate records)."""
    seen, out = set(), []
    for r in rows:
        e = r.get("entry", r)
        ident = json.dumps(e, sort_keys=True)
        if ident not in seen:
            seen.add(ident)
            out.append(e)
    return {f"{src.name}.json": to_json(out)}


def scene_classes(src: Any) -> list[str]:
    if src.classes:
        return list(src.classes)
    return [ln.strip() for ln in read_text(src.labels, f"{src.name}.labels").splitlines() if ln.strip()]


SPECS = {
    "cc3m": Spec("depth", "caption", llava_rows, "{image}", caption, llava_export,
                 identity=lambda r: str(r.get("id", ""))),
    "llava_instruct": Spec("depth", "qa", llava_turns, "{image}", lambda r: [r["answer"]], llava_export,
                           question=lambda r: r["question"], fields=lambda r: r["entry"],
                           identity=lambda r: f"{r['entry'].get('id', '')}|{r['turn']}|{r['question']}"),
    "scene_labels": Spec("depth", "cls", csv_source(("image", "scene")), "{image}", lambda r: [r["scene"]],
                         csv_export(("image", "scene")), classes=scene_classes),
}
