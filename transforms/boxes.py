"""Detection post-processing, as DenseFusion feeds boxes to its caption engine: a confidence
floor, a class-aware NMS merge across detectors, a cap on boxes per image that keeps a quota of
small objects and spreads the rest over labels, and `label: [x1, y1, x2, y2]` normalised to
[0, 1] with 3 decimals. Pure numpy, no model framework.

A detection is a dict: {"label": str, "box": [x1, y1, x2, y2] normalised, "score": float,
"source": detector name}.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

Detection = dict[str, Any]


def normalize_xyxy(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    """Pixel (x1, y1, x2, y2) -> [0, 1], clipped, corners ordered, rounded to 3 decimals."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4) / np.array([width, height, width, height], np.float64)
    b = np.clip(b, 0.0, 1.0)
    x1, x2 = np.minimum(b[:, 0], b[:, 2]), np.maximum(b[:, 0], b[:, 2])
    y1, y2 = np.minimum(b[:, 1], b[:, 3]), np.maximum(b[:, 1], b[:, 3])
    return np.round(np.stack([x1, y1, x2, y2], axis=1), 3)


def detections(boxes: np.ndarray, scores: Sequence[float], labels: Sequence[str], source: str,
               min_score: float = 0.0) -> list[Detection]:
    """Normalised boxes with their scores and labels -> detections above the confidence floor."""
    return [{"label": str(lab), "box": [float(v) for v in box], "score": round(float(s), 4), "source": source}
            for box, s, lab in zip(np.asarray(boxes).reshape(-1, 4), scores, labels) if s >= min_score]


def area(box: Sequence[float]) -> float:
    return max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0, None), axis=1)
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0, None), axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def label_key(label: str) -> str:
    """Labels from different detectors compare case- and separator-insensitively
    ("traffic_light" == "Traffic light")."""
    return " ".join(label.replace("_", " ").lower().split())


def nms_merge(dets: list[Detection], iou: float = 0.5) -> list[Detection]:
    """Class-aware NMS over the detections of all detectors: the highest score wins; a box of the
    same label overlapping it by more than `iou` is dropped. Ties keep input order."""
    if not dets:
        return []
    order = sorted(range(len(dets)), key=lambda i: -dets[i]["score"])
    boxes = np.array([dets[i]["box"] for i in order])
    keys = [label_key(dets[i]["label"]) for i in order]
    overlap = iou_matrix(boxes, boxes)
    dropped = np.zeros(len(order), bool)
    kept: list[Detection] = []
    for j in range(len(order)):
        if dropped[j]:
            continue
        kept.append(dets[order[j]])
        same = np.array([k == keys[j] for k in keys])
        dropped |= same & (overlap[j] > iou)
    return kept


def cap_balanced(dets: list[Detection], max_boxes: int, small_area: float = 0.01,
                 small_quota: float = 0.25) -> list[Detection]:
    """At most `max_boxes`: first the best-scoring small objects (normalised area below
    `small_area`) up to `small_quota` of the cap, then the rest round-robin over labels in score
    order, so neither big boxes nor one frequent label fill every slot. Output sorted by score."""
    if len(dets) <= max_boxes:
        return sorted(dets, key=lambda d: -d["score"])
    ranked = sorted(range(len(dets)), key=lambda i: -dets[i]["score"])
    small = [i for i in ranked if area(dets[i]["box"]) < small_area]
    chosen = small[: math.ceil(small_quota * max_boxes)]
    taken = set(chosen)
    queues: dict[str, list[int]] = {}
    for i in ranked:
        if i not in taken:
            queues.setdefault(label_key(dets[i]["label"]), []).append(i)
    while len(chosen) < max_boxes and queues:
        for lab in list(queues):  # labels in order of their best remaining score
            if len(chosen) == max_boxes:
                break
            chosen.append(queues[lab].pop(0))
            if not queues[lab]:
                del queues[lab]
    return sorted((dets[i] for i in chosen), key=lambda d: -d["score"])


def format_box(det: Detection) -> str:
    """DenseFusion's prompt form: `label: [x1, y1, x2, y2]`, 3 decimals."""
    return f"{det['label']}: [" + ", ".join(f"{v:.3f}" for v in det["box"]) + "]"
