"""Image sources: COCO captions (the official captions_*.json, or LAVIS's list form), VQAv2 and
OK-VQA (questions + annotations files), GQA (question id -> entry)."""
from __future__ import annotations

from typing import Any, Iterator

from fusionweave.pipelines.errors import BuildSetupError
from fusionweave.pipelines.mcl.sources.spec import Spec
from fusionweave.pipelines.mcl.sources.tables import Bad, Row, as_list, json_entries, load_json, texts, to_json


def coco_rows(src: Any) -> Iterator[Row | Bad]:
    data = load_json(src.annotations, f"{src.name}.annotations")
    if isinstance(data, dict) and "annotations" in data:  # official: images + annotations
        files = {str(im.get("id")): im.get("file_name") for im in data.get("images", []) if isinstance(im, dict)}
        for e in json_entries(as_list(data, src.annotations, src.name, "annotations"), src.annotations,
                              ("image_id", "caption")):
            if isinstance(e, dict) and files.get(str(e["image_id"])) is None:
                yield Bad(f"{src.annotations}:image_id={e['image_id']!r}", "malformed_row", "image_id not in images")
                continue
            yield {**e, "file_name": files[str(e["image_id"])]} if isinstance(e, dict) else e
    else:  # LAVIS: [{image, caption (a list in eval files), image_id}], exported in the same form
        yield from json_entries(as_list(data, src.annotations, src.name), src.annotations, ("image", "caption"))


def coco_fields(r: Row) -> Row:
    return {**r, "file_name": r.get("file_name", r.get("image"))}


def coco_export(src: Any, rows: list[Row]) -> dict[str, bytes]:
    """In the form it was read: LAVIS's list, or the official captions format (also what
    pycocoevalcap reads as ground truth) with unique annotation ids."""
    if rows and "file_name" not in rows[0]:
        return {f"{src.name}.json": to_json(rows)}
    images = {r["file_name"]: r["image_id"] for r in rows}
    anns, ids = [], set()
    spare = max((r["id"] for r in rows if isinstance(r.get("id"), int)), default=-1) + 1
    for r in rows:
        for c in texts(r["caption"]):
            ann_id = r.get("id")
            if ann_id is None or ann_id in ids:
                ann_id, spare = spare, spare + 1
            ids.add(ann_id)
            anns.append({"image_id": r["image_id"], "id": ann_id, "caption": c})
    return {f"{src.name}.json": to_json({"images": [{"id": v, "file_name": k} for k, v in images.items()],
                                         "annotations": anns, "type": "captions"})}


def vqa_rows(src: Any) -> Iterator[Row | Bad]:
    qdata = load_json(src.questions, f"{src.name}.questions")
    adata = load_json(src.annotations, f"{src.name}.annotations")
    subtype = qdata.get("data_subtype", "") if isinstance(qdata, dict) else ""
    answers = {str(a["question_id"]): a for a in as_list(adata, src.annotations, src.name, "annotations")
               if isinstance(a, dict) and "question_id" in a}
    for q in json_entries(as_list(qdata, src.questions, src.name, "questions"), src.questions,
                          ("question_id", "image_id", "question")):
        if isinstance(q, Bad):
            yield q
        elif str(q["question_id"]) not in answers:
            yield Bad(f"{src.questions}:question_id={q['question_id']!r}", "malformed_row", "no annotation")
        else:
            yield {"q": q, "a": answers[str(q["question_id"])], "data_subtype": subtype}


def vqa_export(src: Any, rows: list[Row]) -> dict[str, bytes]:
    sub = rows[0]["data_subtype"] if rows else ""
    return {f"{src.name}_questions.json": to_json({"data_subtype": sub, "questions": [r["q"] for r in rows]}),
            f"{src.name}_annotations.json": to_json({"data_subtype": sub, "annotations": [r["a"] for r in rows]})}


def gqa_rows(src: Any) -> Iterator[Row | Bad]:
    data = load_json(src.annotations, f"{src.name}.annotations")
    if not isinstance(data, dict):
        raise BuildSetupError(f"{src.name}: {src.annotations} should map question ids to entries (GQA)")
    entries = [{**v, "question_id": k} if isinstance(v, dict) else v for k, v in data.items()]
    yield from json_entries(entries, src.annotations, ("imageId", "question", "answer"))


def gqa_export(src: Any, rows: list[Row]) -> dict[str, bytes]:
    return {f"{src.name}.json": to_json({r["question_id"]: {k: v for k, v in r.items() if k != "question_id"}
                                          for r in rows})}


SPECS = {
    "coco_caption": Spec("image", "caption", coco_rows, "{file_name}", lambda r: texts(r["caption"]), coco_export,
                         fields=coco_fields),
    "vqa": Spec("image", "qa", vqa_rows, "COCO_{data_subtype}_{image_id:012d}.jpg",
                lambda r: [str(a["answer"]) for a in r["a"]["answers"]], vqa_export,
                question=lambda r: r["q"]["question"], identity=lambda r: str(r["q"]["question_id"]),
                fields=lambda r: {**r["q"], "data_subtype": r["data_subtype"]}),
    "gqa": Spec("image", "qa", gqa_rows, "{imageId}.jpg", lambda r: [str(r["answer"])], gqa_export,
                question=lambda r: r["question"], identity=lambda r: str(r["question_id"])),
}
