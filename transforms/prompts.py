"""DenseFusion's prior-fusion prompts: the experts' priors and the alt-text serialised into a
prompt for the pivot MLLM (engine variant) or the teacher (teacher variant).

Serialisation follows the reference: tags joined with " | "; each detection `label: [x1, y1,
x2, y2]` normalised with 3 decimals; OCR lines one per line with "- "; the alt-text verbatim as
world knowledge; optionally a near-to-far depth ordering of the detected objects. The wording
lives in a template file users can replace. Sections with nothing in them are left out.

A token budget drops priors deterministically: lowest-confidence boxes first, then the depth
line's farthest objects, the lowest-confidence OCR lines, the lowest-scored tags, and last the
alt-text's last words.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import yaml

from fusionweave.configs import packaged
from fusionweave.transforms.boxes import format_box

DEFAULT_TEMPLATE = packaged("prompts/densefusion.yaml")
VARIANTS = ("engine", "teacher")
PLACEHOLDERS = ("alt_text", "tags", "detections", "ocr", "depth")
_TOKEN = re.compile(r"\w+|[^\w\s]")


class PromptError(ValueError):
    pass


def approx_tokens(text: str) -> int:
    """Words and punctuation marks: a tokenizer-free, deterministic stand-in for a token count
    (close to BPE counts for English; pass a real tokenizer's counter for exact budgets)."""
    return len(_TOKEN.findall(text))


@dataclass(frozen=True)
class Template:
    instruction: str
    external_header: str
    sections: tuple[str, ...]
    image: str

    @classmethod
    def load(cls, path: str | Path = DEFAULT_TEMPLATE, variant: str = "engine") -> "Template":
        if variant not in VARIANTS:
            raise PromptError(f"prompt variant {variant!r}: choose one of {VARIANTS}")
        try:
            doc = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
            v = doc[variant]
            t = cls(str(v["instruction"]).strip(), str(v.get("external_header", "")).strip(),
                    tuple(str(s) for s in v["sections"]), str(v.get("image", "<image>")))
        except (OSError, yaml.YAMLError, KeyError, TypeError) as err:
            raise PromptError(f"prompt template {path}: {type(err).__name__}: {err} (needs {variant}.instruction "
                              "and a list of sections)") from None
        for s in t.sections:
            names = re.findall(r"{(\w+)}", s)
            if len(names) != 1 or names[0] not in PLACEHOLDERS:
                raise PromptError(f"prompt template {path}: section {s!r} must hold exactly one of "
                                  f"{['{' + p + '}' for p in PLACEHOLDERS]}")
        return t


@dataclass(frozen=True)
class Priors:
    alt_text: str = ""
    tags: tuple[tuple[str, float], ...] = ()  # (tag, score)
    detections: tuple[dict[str, Any], ...] = ()  # {label, box, score}
    ocr: tuple[tuple[str, float], ...] = ()  # (text, score)
    depth: tuple[tuple[str, float], ...] = ()  # (label, median depth; larger is nearer)
    notes: tuple[str, ...] = field(default=(), compare=False)  # what truncation dropped

    @classmethod
    def from_experts(cls, experts_json: dict[str, Any] | None, alt_text: str = "") -> "Priors":
        """Priors from a perceive `experts.json` (experts that failed or did not run add nothing)."""
        ex = (experts_json or {}).get("experts", {})

        def results(name: str) -> Any:
            x = ex.get(name) or {}
            return x.get("results") if x.get("error") is None else None

        tags = tuple((t["tag"], float(t["score"])) for t in results("tagger") or [])
        dets = (experts_json or {}).get("detections")
        if dets is None:  # no merge ran: whichever detector there is
            dets = (results("detector") or []) + (results("ovd") or [])
        ocr = tuple((o["text"], float(o["score"])) for o in results("ocr") or [])
        depth_res = results("depth") or {}
        near = bool(depth_res.get("larger_is_nearer", True)) if depth_res else True
        depth = tuple((o["label"], float(o["median_depth"] if near else 1 - o["median_depth"]))
                      for o in depth_res.get("objects", []))
        return cls(alt_text.strip(), tags, tuple(dets), ocr, depth)


def render_section(name: str, priors: Priors) -> str:
    if name == "alt_text":
        return priors.alt_text
    if name == "tags":
        return " | ".join(t for t, _ in priors.tags)
    if name == "detections":
        return "\n".join(format_box(d) for d in priors.detections)
    if name == "ocr":
        return "\n".join(f"- {t}" for t, _ in priors.ocr)
    if name == "depth":
        # objects ordered nearest first; a label seen twice is listed at its nearest
        seen: dict[str, float] = {}
        for label, d in sorted(priors.depth, key=lambda x: (-x[1], x[0])):
            seen.setdefault(label, d)
        return ", ".join(seen)
    raise PromptError(f"unknown prior {name!r}")


def build(template: Template, priors: Priors, with_image: bool = True) -> str:
    parts = [template.instruction]
    body = []
    for s in template.sections:
        name = re.findall(r"{(\w+)}", s)[0]
        content = render_section(name, priors)
        if content.strip():
            body.append(s.replace("{" + name + "}", content))
    if body:
        parts.append("\n".join([template.external_header, *body]) if template.external_header else "\n".join(body))
    if with_image and template.image:
        parts.append(template.image)
    return "\n\n".join(parts)


def _drop_lowest(items: tuple, score: Callable[[Any], float]) -> tuple:
    """Without its lowest-scored item (the last such, so ties go in a fixed order)."""
    worst = min(range(len(items)), key=lambda i: (score(items[i]), -i))
    return items[:worst] + items[worst + 1:]


def fit(template: Template, priors: Priors, budget: int | None,
        count: Callable[[str], int] = approx_tokens, with_image: bool = True) -> tuple[str, Priors]:
    """The prompt within `budget` tokens, and the priors it kept (their `notes` say what went)."""
    p = priors
    dropped = {"detections": 0, "depth": 0, "ocr": 0, "tags": 0, "alt_text_words": 0}
    while budget is not None and count(build(template, p)) > budget:
        if p.detections:
            p = replace(p, detections=_drop_lowest(p.detections, lambda d: d.get("score", 0.0)))
            dropped["detections"] += 1
        elif p.depth:  # the farthest object first
            p = replace(p, depth=_drop_lowest(p.depth, lambda o: o[1]))
            dropped["depth"] += 1
        elif p.ocr:
            p = replace(p, ocr=_drop_lowest(p.ocr, lambda o: o[1]))
            dropped["ocr"] += 1
        elif p.tags:
            p = replace(p, tags=_drop_lowest(p.tags, lambda t: t[1]))
            dropped["tags"] += 1
        elif p.alt_text:
            p = replace(p, alt_text=" ".join(p.alt_text.split()[:-1]))
            dropped["alt_text_words"] += 1
        else:
            break  # the instruction alone is over budget: nothing left to drop
    notes = tuple(f"dropped {n} {k}" for k, n in dropped.items() if n)
    p = replace(p, notes=notes)
    return build(template, p, with_image), p


def priors_json(p: Priors) -> dict[str, Any]:
    return {"alt_text": p.alt_text, "tags": [list(t) for t in p.tags], "detections": list(p.detections),
            "ocr": [list(o) for o in p.ocr], "depth": [list(d) for d in p.depth], "notes": list(p.notes)}
