"""Evaluation after a stage: every eval set of every modality seen so far, decoded by the model
and scored by its task. Captions: BLEU-4 / ROUGE-L / CIDEr (trainers/caption_engine/coco_metrics,
pycocoevalcap when installed) against the exported COCO-format ground truth; QA: VQA-normalised
exact match; classification: accuracy of the decoded class name. A set's `score` (0-100) is its
CIDEr x 100, exact match % or accuracy %; a modality's score is the mean over its sets."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch

from fusionweave.trainers.caption_engine.coco_metrics import caption_scores
from fusionweave.trainers.pathweave.config import EvalConfig
from fusionweave.trainers.pathweave.data import Prompter, eval_batches

_ARTICLES = {"a", "an", "the"}
_NUMBERS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
            "seven": "7", "eight": "8", "nine": "9", "ten": "10"}


def vqa_normalise(text: str) -> str:
    """The VQA evaluation's answer normalisation: lower case, punctuation out, number words to
    digits, articles dropped."""
    words = re.sub(r"[^\w\s']", " ", text.lower().replace("'s", " 's")).split()
    return " ".join(_NUMBERS.get(w, w) for w in words if w not in _ARTICLES)


def coco_refs(build: Path, gt: str) -> dict[str, list[str]]:
    """Sample key -> reference captions, from the COCO-format ground truth mcl_export wrote."""
    data = json.loads((Path(build) / gt).read_text())
    keys = {im["id"]: im["key"] for im in data["images"]}
    refs: dict[str, list[str]] = {}
    for a in data["annotations"]:
        refs.setdefault(keys[a["image_id"]], []).append(a["caption"])
    return refs


def score_set(task: str, preds: list[str], refs: list[list[str]]) -> dict[str, float]:
    if task == "caption":
        s = caption_scores(refs, preds)
        return {"bleu4": float(s["bleu4"]), "rouge_l": float(s["rouge_l"]), "cider": float(s["cider"]),
                "score": 100 * float(s["cider"])}
    hits = [vqa_normalise(p) in {vqa_normalise(r) for r in rs} for p, rs in zip(preds, refs)]
    acc = 100.0 * sum(hits) / max(1, len(hits))
    return {"exact_match" if task == "qa" else "accuracy": acc, "score": acc}


def evaluate_set(model: Any, prompter: Prompter, build: Path, entry: dict[str, Any], ev: EvalConfig,
                 device: torch.device) -> dict[str, Any]:
    task = entry["tasks"][0]
    gt = coco_refs(build, entry["coco_gt"]) if task == "caption" and entry.get("coco_gt") else None
    decode = ev.caption if task == "caption" else ev.answer
    preds: list[str] = []
    refs: list[list[str]] = []
    for batch in eval_batches(build, entry["shards"], ev.batch_size, ev.limit):
        recs = batch["json"]
        preds += model.generate(recs[0]["modality"], batch, [prompter.prompt_ids(r) for r in recs], device,
                                num_beams=ev.num_beams, min_new_tokens=decode.min_new_tokens,
                                max_new_tokens=decode.max_new_tokens)
        refs += [gt[r["key"]] if gt is not None else r["answers"] for r in recs]
    if not preds:
        raise ValueError(f"eval set {entry['source']} has no readable sample")
    return {"task": task, "samples": len(preds), **score_set(task, preds, refs), "examples": preds[:3]}


def evaluate_seen(model: Any, prompter: Prompter, build: Path, sets: dict[str, dict[str, Any]], ev: EvalConfig,
                  device: torch.device) -> dict[str, Any]:
    """{sets: {source: result}, modalities: {modality: mean score}}"""
    model.eval()
    results = {name: {"modality": e["modality"], **evaluate_set(model, prompter, build, e, ev, device)}
               for name, e in sets.items()}
    by_mod: dict[str, list[float]] = {}
    for r in results.values():
        by_mod.setdefault(r["modality"], []).append(r["score"])
    return {"sets": results, "modalities": {m: sum(v) / len(v) for m, v in by_mod.items()}}
