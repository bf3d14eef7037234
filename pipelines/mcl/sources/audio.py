"""Audio sources: AudioCaps (`youtube_id, start_time, caption`), AudioCaps-QA (`youtube_id,
question, answer, caption`), AudioSet balanced segments (labels -> a caption), WavCaps
(`{"data": [{id, caption}]}`), Clotho (`file_name, caption_1..caption_5`) and ClothoAQA
(`file_name, QuestionText, answer, confidence`, three annotators per question)."""
from __future__ import annotations

from typing import Any, Iterator

from fusionweave.pipelines.mcl.sources.spec import Spec
from fusionweave.pipelines.mcl.sources.tables import (Bad, Row, as_list, csv_rows, json_entries, load_json, texts, to_csv,
                                          to_json)

CLOTHO_CAPTIONS = tuple(f"caption_{i}" for i in range(1, 6))
AUDIOSET_COLUMNS = ("YTID", "start_seconds", "end_seconds", "positive_labels")


def csv_source(required: tuple[str, ...], comment: str | None = None, columns: tuple[str, ...] | None = None) -> Any:
    def rows(src: Any) -> Iterator[Row | Bad]:
        yield from csv_rows(src.annotations, f"{src.name}.annotations", required, columns, comment)
    return rows


def csv_export(columns: tuple[str, ...], header: bool = True) -> Any:
    def export(src: Any, rows: list[Row]) -> dict[str, bytes]:
        # the original header's order (rows come back from JSON with sorted keys), extras after;
        # headerless files (Cap3D) keep exactly their columns
        cols = [*columns, *sorted({k for r in rows for k in r} - set(columns))] if header else list(columns)
        return {f"{src.name}.csv": to_csv(rows, cols, header)}
    return export


def audioset_names(src: Any) -> dict[str, str]:
    names = {}
    for r in csv_rows(src.labels, f"{src.name}.labels", ("mid", "display_name")):
        if isinstance(r, dict):
            names[r["mid"]] = r["display_name"]
    return names


def audioset_caption(names: list[str]) -> str:
    """Labels as one caption: 'Speech, Male speech and Music' (the labels, in the file's order)."""
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def audioset_rows(src: Any) -> Iterator[Row | Bad]:
    names = audioset_names(src)
    for r in csv_rows(src.annotations, f"{src.name}.annotations", AUDIOSET_COLUMNS, AUDIOSET_COLUMNS, "#"):
        if isinstance(r, Bad):
            yield r
            continue
        mids = [m.strip() for m in r["positive_labels"].split(",") if m.strip()]
        if not mids:
            yield Bad(f"{src.annotations}:{r['YTID']}", "malformed_row", "no labels")
            continue
        unknown = [m for m in mids if m not in names]
        if unknown:
            yield Bad(f"{src.annotations}:{r['YTID']}", "unknown_class", f"labels {unknown} not in {src.labels}")
            continue
        yield {**r, "caption": audioset_caption([names[m] for m in mids])}


def audioset_export(src: Any, rows: list[Row]) -> dict[str, bytes]:
    lines = [f"# {', '.join(AUDIOSET_COLUMNS)}"]
    lines += [f'{r["YTID"]}, {r["start_seconds"]}, {r["end_seconds"]}, "{r["positive_labels"]}"' for r in rows]
    return {f"{src.name}.csv": ("\n".join(lines) + "\n").encode()}


def wavcaps_rows(src: Any) -> Iterator[Row | Bad]:
    data = load_json(src.annotations, f"{src.name}.annotations")
    yield from json_entries(as_list(data, src.annotations, src.name, "data"), src.annotations, ("id", "caption"))


def wavcaps_export(src: Any, rows: list[Row]) -> dict[str, bytes]:
    return {f"{src.name}.json": to_json({"num_captions_per_audio": 1, "data": rows})}


SPECS = {
    "audiocaps": Spec("audio", "caption", csv_source(("youtube_id", "start_time", "caption")), "{youtube_id}.wav",
                      lambda r: [r["caption"]], csv_export(("audiocap_id", "youtube_id", "start_time", "caption"))),
    "audiocaps_qa": Spec("audio", "qa", csv_source(("youtube_id", "question", "answer")), "{youtube_id}.wav",
                         lambda r: [r["answer"]], csv_export(("youtube_id", "question", "answer", "caption")),
                         question=lambda r: r["question"], identity=lambda r: r["question"]),
    "audioset": Spec("audio", "caption", audioset_rows, "{YTID}.wav", lambda r: [r["caption"]], audioset_export),
    "wavcaps": Spec("audio", "caption", wavcaps_rows, "{id}.flac", lambda r: texts(r["caption"]), wavcaps_export),
    "clotho": Spec("audio", "caption", csv_source(("file_name", *CLOTHO_CAPTIONS)), "{file_name}",
                   lambda r: [r[c] for c in CLOTHO_CAPTIONS], csv_export(("file_name", *CLOTHO_CAPTIONS))),
    "clotho_aqa": Spec("audio", "qa", csv_source(("file_name", "QuestionText", "answer")), "{file_name}",
                       lambda r: [r["answer"]], csv_export(("file_name", "QuestionText", "answer", "confidence")),
                       question=lambda r: r["QuestionText"], identity=lambda r: r["QuestionText"]),
}
