"""Detection post-processing on hand-made boxes: normalisation, the cross-detector class-aware
NMS merge, and the balanced cap with its small-object quota."""
from __future__ import annotations

import numpy as np

from fusionweave.transforms.boxes import cap_balanced, detections, format_box, iou_matrix, nms_merge, normalize_xyxy


def det(label: str, box: list[float], score: float, source: str = "a") -> dict:
    return {"label": label, "box": box, "score": score, "source": source}


def test_normalise_clips_orders_and_rounds_to_3_decimals() -> None:
    b = normalize_xyxy(np.array([[64, 48, 320, 240], [-10, 500, 700, 20], [10.123, 0, 1, 1]]), 640, 480)
    assert b.tolist() == [[0.1, 0.1, 0.5, 0.5], [0.0, 0.042, 1.0, 1.0], [0.002, 0.0, 0.016, 0.002]]
    assert format_box(det("traffic light", [0.1, 0.25, 0.5, 1.0], 0.9)) == "traffic light: [0.100, 0.250, 0.500, 1.000]"


def test_confidence_floor() -> None:
    d = detections(np.array([[0, 0, 0.5, 0.5], [0, 0, 1, 1]]), [0.2, 0.05], ["cat", "dog"], "yolo", min_score=0.1)
    assert [x["label"] for x in d] == ["cat"] and d[0]["source"] == "yolo"


def test_iou() -> None:
    m = iou_matrix(np.array([[0, 0, 0.5, 0.5]]), np.array([[0, 0, 0.5, 0.5], [0.25, 0, 0.75, 0.5], [0.6, 0.6, 1, 1]]))
    assert np.allclose(m, [[1.0, 1 / 3, 0.0]])


def test_nms_merge_is_class_aware_across_detectors() -> None:
    dets = [det("Dog", [0.1, 0.1, 0.5, 0.5], 0.6, "yolo"),
            det("dog", [0.12, 0.1, 0.5, 0.52], 0.9, "owl"),        # same object, other detector, higher score
            det("cat", [0.1, 0.1, 0.5, 0.5], 0.5, "owl"),          # same place, other class: kept
            det("traffic_light", [0.6, 0.6, 0.7, 0.7], 0.4, "yolo"),
            det("Traffic light", [0.6, 0.6, 0.7, 0.71], 0.3, "owl"),  # same class, other spelling
            det("dog", [0.6, 0.1, 0.9, 0.4], 0.2, "yolo")]         # another dog, no overlap: kept
    kept = nms_merge(dets, iou=0.5)
    assert [(d["label"], d["source"], d["score"]) for d in kept] == [
        ("dog", "owl", 0.9), ("cat", "owl", 0.5), ("traffic_light", "yolo", 0.4), ("dog", "yolo", 0.2)]
    assert len(nms_merge(dets, iou=0.99)) == 6  # nothing overlaps that much


def test_cap_keeps_a_quota_of_small_objects_and_spreads_labels() -> None:
    big = [det("person", [0, 0, 0.5, 0.9], 0.9 - i * 0.01) for i in range(10)]
    small = [det(f"thing{i}", [0.9, 0.9, 0.95, 0.95], 0.2 - i * 0.01) for i in range(4)]
    cars = [det("car", [0.2, 0.5, 0.6, 0.9], 0.5 - i * 0.01) for i in range(3)]
    out = cap_balanced(big + small + cars, max_boxes=8, small_area=0.01, small_quota=0.25)
    labels = [d["label"] for d in out]
    assert len(out) == 8
    assert labels.count("thing0") == 1 and labels.count("thing1") == 1  # 2 of 8 slots for small objects
    assert "car" in labels  # round-robin over labels: person cannot take every other slot
    # the 6 other slots go round the labels in order of their best score: person, car, thing2, thing3
    assert labels.count("person") == 2 and labels.count("car") == 2 and {"thing2", "thing3"} <= set(labels)
    assert [d["score"] for d in out] == sorted((d["score"] for d in out), reverse=True)
    few = big[:3]
    assert cap_balanced(few, max_boxes=8) == few  # under the cap nothing is dropped

