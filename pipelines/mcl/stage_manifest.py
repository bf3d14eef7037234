"""The continual-stage manifest (`mcl_export/stages.json`): PathWeave's modality order, each
stage's training mixture with its sampling ratios and shards, the eval sets of the stage's
modality, and which modalities are evaluated after it (all seen so far). Training reads it:
trainers/mcl_stages.py."""
from __future__ import annotations

from collections import defaultdict
from typing import Any

from fusionweave.pipelines.mcl.config import MclConfig
from fusionweave.pipelines.mcl.sources import SPECS

STAGES_FILE = "stages.json"
FORMAT = "fusionweave.mcl-stages/1"


def ratios(mixture: dict[str, float] | None, sizes: dict[str, int]) -> dict[str, float]:
    """Given ratios normalised to sum to 1; without a mixture, ratios by training-set size."""
    given = mixture or {s: float(n) for s, n in sizes.items()}
    total = sum(given.values())
    return {s: round(v / total, 6) for s, v in given.items()} if total > 0 else {}


def stage_manifest(cfg: MclConfig, records: list[dict[str, Any]], shard_prefix: str,
                   export_prefix: str) -> dict[str, Any]:
    by_source: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        by_source[r["source"]].append(r)
    sources = {s.name: s for s in cfg.sources}

    def entry(name: str) -> dict[str, Any]:
        recs, src = by_source.get(name, []), sources[name]
        split_dir = src.split if src.domain == "in" else f"{src.split}_ood"
        tasks = sorted({r["task"] for r in recs})
        e = {"source": name, "dataset": src.format, "split": src.split, "domain": src.domain, "tasks": tasks,
             "samples": len(recs), "shards": sorted({shard_prefix + r["shard"] for r in recs})}
        if src.split != "train" and "caption" in tasks:
            e["coco_gt"] = f"{export_prefix}{recs[0]['modality']}/{split_dir}/{name}_coco_gt.json"
        return e

    stages, seen = [], []
    for st in cfg.stages:
        mine = [s for s in cfg.sources if SPECS[s.format].modality == st.modality]
        if not mine:
            continue
        seen.append(st.modality)
        train = {s.name: len(by_source.get(s.name, [])) for s in mine if s.split == "train"}
        r = ratios(st.mixture, train)
        stages.append({
            "stage": len(stages), "modality": st.modality,
            "mixture_given": st.mixture, "train": [{**entry(n), "ratio": r.get(n, 0.0)} for n in train],
            "eval": [entry(s.name) for s in mine if s.split != "train"],
            "evaluate_after": list(seen),
        })
    return {"format": FORMAT, "order": [s["modality"] for s in stages], "seed": cfg.seed, "stages": stages,
            "metrics": {"caption": ["BLEU-4", "METEOR", "ROUGE-L", "CIDEr"], "qa": "VQA-normalised exact match",
                        "cls": "accuracy", "continual": ["accuracy matrix", "average", "transfer", "forgetting"]}}
