"""What a source format is (its rows, where its media is, what a record's question and answers
are, how to write it back) and the one routine that turns any format's rows into records."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, Callable, Iterator

from fusionweave.pipelines.config_base import Strict
from fusionweave.pipelines.errors import BuildSetupError
from fusionweave.pipelines.mcl.sources.tables import Bad, Row, load_json
from fusionweave.transforms.keys import key_for
from fusionweave.transforms.mcl.record import Record


def _none(row: Row) -> None:
    return None


def _empty(row: Row) -> str:
    return ""


@dataclass(frozen=True)
class Spec:
    modality: str
    task: str
    rows: Callable[[Any], Iterator[Row | Bad]]  # (source config) -> original rows
    media: str  # default media pattern, formatted with the row's fields
    answers: Callable[[Row], list[str]]
    export: Callable[[Any, list[Row]], dict[str, bytes]]  # (source, kept rows) -> files in the original format
    question: Callable[[Row], str | None] = _none
    identity: Callable[[Row], str] = _empty  # rows sharing media and identity are one record
    fields: Callable[[Row], Row] = dict  # the row's fields the media pattern may use
    classes: Callable[[Any], list[str]] | None = None  # cls formats: the class names


class UnsafePath(ValueError):
    pass


def media_path(pattern: str, fields: Row) -> str:
    """The media path a row names, relative to its media root; never absolute or escaping it."""
    rel = pattern.format(**fields).replace("\\", "/")
    p = PurePosixPath(rel)
    if not rel or p.is_absolute() or ".." in p.parts:
        raise UnsafePath(f"media path {rel!r} is absolute or leaves the media root")
    return str(p)


def reject_row(src: Strict, where: str, reason: str, detail: str) -> dict[str, Any]:
    return {"key": key_for(f"mcl|{src.name}|row|{where}"), "step": "parse", "reason": reason,
            "detail": f"{where}: {detail}", "source": src.name}


def build_records(src: Any, spec: Spec) -> tuple[list[Record], list[dict[str, Any]]]:
    """Group a source's rows into records (one per media file and identity: a clip's five
    captions are one caption record with five references), rejecting rows that cannot be read."""
    pattern = src.media_pattern or spec.media
    classes = spec.classes(src) if spec.classes else None
    answer_map = load_json(src.answer_map, f"{src.name}.answer_map") if src.answer_map else None
    if answer_map is not None and not isinstance(answer_map, dict):
        raise BuildSetupError(f"{src.name}.answer_map: {src.answer_map} should map answers to labels")
    records: dict[tuple[str, str], Record] = {}
    rejects: list[dict[str, Any]] = []
    for i, item in enumerate(spec.rows(src)):
        if isinstance(item, Bad):
            rejects.append(reject_row(src, item.where, item.reason, item.detail))
            continue
        where = f"{src.annotations}#{i}"
        try:
            media = media_path(pattern, spec.fields(item))
            answers = [a.strip() for a in spec.answers(item)]
            question = spec.question(item)
            ident = spec.identity(item)
        except UnsafePath as err:
            rejects.append(reject_row(src, where, "unsafe_media_path", str(err)))
            continue
        except (KeyError, ValueError, IndexError, TypeError, AttributeError) as err:
            rejects.append(reject_row(src, where, "malformed_row", f"{type(err).__name__}: {err}"))
            continue
        if not answers or not all(answers) or (spec.task == "qa" and not (question or "").strip()):
            rejects.append(reject_row(src, where, "malformed_row", "empty question, answer or caption"))
            continue
        label = None
        if classes is not None:
            if answers[0] not in classes:
                rejects.append(reject_row(src, where, "unknown_class", f"{answers[0]!r} is not one of the classes"))
                continue
            label = classes.index(answers[0])
        elif answer_map is not None:
            label = int(answer_map.get(answers[0], -1))
        rec = records.get((media, ident))
        if rec is None:
            records[(media, ident)] = Record(spec.modality, spec.task, src.format, src.name, src.split, media,
                                             answers, question.strip() if question else None, label, src.domain,
                                             [item], ident)
        else:
            rec.answers += answers
            rec.rows.append(item)
    return list(records.values()), rejects
