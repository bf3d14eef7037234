"""Video sources: MSRVTT captions (`{video, caption}` entries, one per caption) and MSRVTT-QA /
MSVD-QA (`{video, question, answer, question_id}`, with the answer -> label map)."""
from __future__ import annotations

from typing import Any, Iterator

from fusionweave.pipelines.mcl.sources.spec import Spec
from fusionweave.pipelines.mcl.sources.tables import Bad, Row, as_list, json_entries, load_json, texts, to_json


def entries(required: tuple[str, ...]) -> Any:
    def rows(src: Any) -> Iterator[Row | Bad]:
        data = load_json(src.annotations, f"{src.name}.annotations")
        yield from json_entries(as_list(data, src.annotations, src.name), src.annotations, required)
    return rows


def list_export(src: Any, rows: list[Row]) -> dict[str, bytes]:
    files = {f"{src.name}.json": to_json(rows)}
    if getattr(src, "answer_map", None):
        files[f"{src.name}_ans2label.json"] = to_json(load_json(src.answer_map, f"{src.name}.answer_map"))
    return files


def qa_identity(r: Row) -> str:
    return str(r.get("question_id", r.get("id", r["question"])))


SPECS = {
    "msrvtt_caption": Spec("video", "caption", entries(("caption",)), "{video}", lambda r: texts(r["caption"]),
                           list_export),
    "video_qa": Spec("video", "qa", entries(("question", "answer")), "{video}", lambda r: texts(r["answer"]),
                     list_export, question=lambda r: r["question"], identity=qa_identity),
}
