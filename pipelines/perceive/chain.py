"""The perceive chain: experts built from the config, in dependency order, with their CPU
prepare/postprocess steps around them and the detection merge after the detectors.

tagger -> detector -> ovd (queried with the tags) -> merge boxes -> ocr -> depth (per-object
depth needs the merged boxes).
"""
from __future__ import annotations

import json
from typing import Any

import numpy as np

from fusionweave.experts.base import Batch, ChainItem
from fusionweave.experts.depth import DETECTIONS, DepthExpert
from fusionweave.experts.expert import EXPERTS, Expert, read_results
from fusionweave.experts.ocr import OcrExpert
from fusionweave.experts.owl_detector import OwlDetector
from fusionweave.experts.tagger import OpenClipTagger, Tagger
from fusionweave.experts.yolo_detector import YoloDetector, YoloWorldDetector
from fusionweave.pipelines.perceive.config import BoxesConfig, PerceiveConfig
from fusionweave.transforms.boxes import cap_balanced, nms_merge

DETECTORS = ("detector", "ovd")


def build_experts(cfg: PerceiveConfig) -> list[Expert]:
    trc = cfg.trust_remote_code
    out: list[Expert] = []
    if cfg.tagger.enabled:
        t = cfg.tagger
        common = dict(vocabulary_file=t.vocabulary, prompt=t.prompt, threshold=t.threshold, top_k=t.top_k)
        out.append(OpenClipTagger(t.model, t.pretrained, t.resources(), **common) if t.backend == "open_clip" else
                   Tagger(t.model, t.revision, t.resources(), trust_remote_code=trc, **common))
    if cfg.detector.enabled:
        d = cfg.detector
        out.append(YoloDetector(d.model, d.revision, d.resources(), confidence=d.confidence, iou=d.iou,
                                image_size=d.image_size, max_det=d.max_det))
    if cfg.ovd.enabled:
        o = cfg.ovd
        if o.backend == "owl":
            out.append(OwlDetector(o.model, o.revision, o.resources(), confidence=o.confidence,
                                   max_queries=o.max_queries, trust_remote_code=trc))
        else:
            out.append(YoloWorldDetector(o.model, o.revision, o.resources(), text_model=o.text_model,
                                         text_revision=o.text_revision, max_queries=o.max_queries,
                                         confidence=o.confidence, image_size=o.image_size))
    if cfg.ocr.enabled:
        c = cfg.ocr
        out.append(OcrExpert(c.model, None, c.resources(), min_confidence=c.min_confidence,
                             det_model_dir=c.det_model_dir, rec_model_dir=c.rec_model_dir,
                             enable_mkldnn=c.enable_mkldnn))
    if cfg.depth.enabled:
        out.append(DepthExpert(cfg.depth.model, cfg.depth.revision, cfg.depth.resources(), trust_remote_code=trc))
    # plug-in experts (one class and its config block each), after the built-in ones
    out += [EXPERTS[name].from_config(block, trc) for name, block in cfg.plugins.items() if getattr(block, "enabled", True)]
    return out


class MergeDetections:
    """All detectors' boxes -> one list per image: confidence floor, class-aware NMS, balanced cap."""

    def __init__(self, cfg: BoxesConfig):
        self.cfg = cfg

    def __call__(self, batch: Batch) -> Batch:
        merged = []
        per_detector = [read_results(batch, name) for name in DETECTORS]
        for i in range(len(batch["key"])):
            dets = [d for results in per_detector for d in (results[i] or []) if d["score"] >= self.cfg.min_score]
            kept = cap_balanced(nms_merge(dets, self.cfg.nms_iou), self.cfg.max_boxes, self.cfg.small_area,
                                self.cfg.small_quota)
            merged.append(json.dumps(kept, separators=(",", ":")))
        batch[DETECTIONS] = np.array(merged, dtype=object)
        return batch

    def settings(self) -> dict[str, Any]:
        return self.cfg.model_dump()


def build_chain(experts: list[Expert], boxes: BoxesConfig) -> list[ChainItem]:
    stages: list[ChainItem] = []
    detectors = [e for e in experts if e.name in DETECTORS]
    for e in experts:
        if e.has_prepare:
            stages.append(e.prepare)
        stages.append(e)
        if e.has_postprocess:
            stages.append(e.postprocess)
        if detectors and e is detectors[-1]:
            stages.append(MergeDetections(boxes))
    return stages
