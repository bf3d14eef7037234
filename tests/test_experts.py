"""Each perception expert on tiny random models built from configs (tagger, YOLO from its YAML,
OWLv2, depth) and real OCR (RapidOCR's shipped PP-OCR models) on rendered words: the results'
schema, shapes and ranges, per-row failure isolation, and clear errors for missing models."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from fusionweave.experts.base import Batch, run_chain_locally
from fusionweave.experts.depth import DepthExpert
from fusionweave.experts.expert import Expert, ExpertError
from fusionweave.experts.ocr import OcrExpert
from fusionweave.experts.owl_detector import OwlDetector
from fusionweave.experts.tagger import Tagger
from fusionweave.experts.tiny_models import make_tiny_clip_pair, make_tiny_depth, make_tiny_owlv2
from fusionweave.experts.yolo_detector import YoloDetector, YoloWorldDetector, resolve_yolo
from fusionweave.pipelines.perceive.chain import MergeDetections, build_chain
from fusionweave.pipelines.perceive.config import BoxesConfig

TAGS = ["dog", "cat", "traffic light", "car", "person", "tree"]


def picture(seed: int, size: tuple[int, int] = (320, 200), words: list[tuple[str, tuple[int, int]]] = ()) -> bytes:
    rng = np.random.default_rng(seed)
    img = Image.new("RGB", size, tuple(int(c) for c in rng.integers(0, 256, 3)))
    d = ImageDraw.Draw(img)
    d.rectangle((20, 20, 140, 120), fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
    font = ImageFont.load_default(size=40)
    for text, xy in words:
        d.text(xy, text, fill=(0, 0, 0), font=font)
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def batch(images: list[bytes], sizes: list[tuple[int, int]] | None = None) -> Batch:
    sizes = sizes or [Image.open(io.BytesIO(b)).size if b[:4] == b"\x89PNG" else (320, 200) for b in images]
    return {"key": np.array([f"k{i}" for i in range(len(images))], dtype=object),
            "image": np.array(images, dtype=object),
            "width": np.array([w for w, _ in sizes], np.int32), "height": np.array([h for _, h in sizes], np.int32)}


def results(out: Batch, name: str) -> list[dict]:
    return [json.loads(c) for c in out[f"x_{name}"]]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("expert-models")
    vocab = root / "tags.txt"
    vocab.write_text("# test vocabulary\n" + "\n".join(TAGS) + "\ndog\n")
    return {"clip": make_tiny_clip_pair(root / "clip", TAGS), "owl": make_tiny_owlv2(root / "owl", TAGS),
            "depth": make_tiny_depth(root / "depth"), "vocab": vocab}


def assert_box(b: list[float]) -> None:
    assert len(b) == 4 and all(0 <= v <= 1 and round(v, 3) == v for v in b) and b[0] <= b[2] and b[1] <= b[3]


def test_tagger_top_k_threshold_and_vocabulary(models: dict) -> None:
    t = Tagger(str(models["clip"]), vocabulary_file=str(models["vocab"]), threshold=0.0, top_k=3)
    assert t.tags == TAGS  # comments skipped, duplicates dropped
    out = run_chain_locally([t.prepare, t], [batch([picture(0), picture(1)])])[0]
    for r in results(out, "tagger"):
        assert r["error"] is None and len(r["results"]) == 3
        scores = [x["score"] for x in r["results"]]
        assert scores == sorted(scores, reverse=True) and all(0 <= s <= 1 for s in scores)
        assert {x["tag"] for x in r["results"]} <= set(TAGS)
    strict = Tagger(str(models["clip"]), vocabulary_file=str(models["vocab"]), threshold=0.99, top_k=3)
    out = run_chain_locally([strict.prepare, strict], [batch([picture(0)])])[0]
    assert results(out, "tagger")[0]["results"] == []  # softmax over 6 tags never reaches 0.99 here


def test_detectors_and_merge(models: dict) -> None:
    tagger = Tagger(str(models["clip"]), vocabulary_file=str(models["vocab"]), threshold=0.0, top_k=4)
    yolo = YoloDetector("yolov8n.yaml", confidence=0.0, max_det=30)
    owl = OwlDetector(str(models["owl"]), confidence=0.0)
    boxes = BoxesConfig(min_score=0.0, max_boxes=12)
    chain = build_chain([tagger, yolo, owl], boxes)
    assert isinstance(chain[-1], MergeDetections)
    imgs = [picture(2, (320, 200)), picture(3, (200, 320))]
    out = run_chain_locally(chain, [batch(imgs, [(320, 200), (200, 320)])])[0]
    for i in range(2):
        tags = {t["tag"] for t in results(out, "tagger")[i]["results"]}
        y = results(out, "detector")[i]
        o = results(out, "ovd")[i]
        assert y["error"] is None and o["error"] is None
        assert 0 < len(y["results"]) <= 30 and {d["label"] for d in y["results"]} <= {str(k) for k in range(80)}
        assert o["results"] and {d["label"] for d in o["results"]} <= tags  # queried with the image's own tags
        for d in y["results"] + o["results"]:
            assert_box(d["box"])
        merged = json.loads(out["detections"][i])
        assert 0 < len(merged) <= 12 and {d["source"] for d in merged} <= {"detector", "ovd"}


def test_depth_map_png_and_object_depths(models: dict) -> None:
    depth = DepthExpert(str(models["depth"]))
    b = batch([picture(4, (320, 200)), picture(5, (150, 260))], [(320, 200), (150, 260)])
    b["detections"] = np.array([json.dumps([{"label": "a", "box": [0.0, 0.0, 0.5, 0.5], "score": 1.0}]), "[]"],
                               dtype=object)
    out = run_chain_locally([depth.prepare, depth, depth.postprocess], [b])[0]
    for i, (w, h) in enumerate([(320, 200), (150, 260)]):
        r = results(out, "depth")[i]
        assert r["error"] is None and r["results"]["member"] == "depth.png"
        png = Image.open(io.BytesIO(out["depth_png"][i]))
        arr = np.asarray(png)
        assert png.size == (w, h) and png.mode.startswith("I;16") and arr.max() == 65535 and arr.min() == 0
        assert r["results"]["raw_min"] <= r["results"]["raw_max"]
    objects = results(out, "depth")[0]["results"]["objects"]
    region = np.asarray(Image.open(io.BytesIO(out["depth_png"][0])))[:100, :160]
    assert len(objects) == 1 and objects[0]["median_depth"] == round(float(np.median(region)) / 65535, 3)


def test_rapidocr_reads_rendered_words_where_they_are() -> None:
    img = picture(6, (640, 360), [("FUSION WEAVE", (40, 60)), ("hello 2026", (300, 250))])
    out = run_chain_locally([OcrExpert(min_confidence=0.5)], [batch([img])])[0]
    r = results(out, "ocr")[0]
    assert r["error"] is None
    found = {x["text"].replace(" ", ""): x for x in r["results"]}
    assert set(found) == {"FUSIONWEAVE", "hello2026"}
    a, b = found["FUSIONWEAVE"]["box"], found["hello2026"]["box"]
    assert a[0] < 0.1 and a[1] < 0.25 and a[3] < 0.35  # top left
    assert b[0] > 0.4 and b[1] > 0.6  # bottom right
    assert all(x["score"] >= 0.5 for x in r["results"])


class Flaky(Expert):
    """Raises on one image, in batches and alone."""

    name = "flaky"

    def predict(self, batch: Batch) -> list:
        if "boom" in batch["key"]:
            raise ValueError("cannot handle boom")
        return [{"n": len(k)} for k in batch["key"]]


def test_failure_on_one_row_stays_on_that_row(models: dict) -> None:
    b = batch([picture(7), picture(8), picture(9)])
    b["key"] = np.array(["a", "boom", "ccc"], dtype=object)
    out = Flaky().process(b)
    r = results(out, "flaky")
    assert [x["results"] for x in r] == [{"n": 1}, None, {"n": 3}]
    assert r[1]["error"] == "ValueError: cannot handle boom" and r[0]["error"] is None
    # an image no decoder can read: the tagger's prepare marks it, the model never sees it
    t = Tagger(str(models["clip"]), vocabulary_file=str(models["vocab"]))
    bad = batch([picture(7), b"\x89PNG\r\n\x1a\n broken", picture(8)], [(320, 200)] * 3)
    out = run_chain_locally([t.prepare, t, OcrExpert()], [bad])[0]
    for name in ("tagger", "ocr"):
        r = results(out, name)
        assert r[1]["error"] and r[1]["results"] is None
        assert r[0]["error"] is None and r[2]["error"] is None


def test_missing_or_wrong_models_are_clear_errors(models: dict, tmp_path: Path) -> None:
    from fusionweave.experts.resolve import ModelNotFound

    with pytest.raises(ModelNotFound, match="looked in"):
        Tagger(str(tmp_path / "nope"), vocabulary_file=str(models["vocab"])).check()
    with pytest.raises(ExpertError, match="not a CLIP/SigLIP"):
        Tagger(str(models["depth"]), vocabulary_file=str(models["vocab"])).check()
    with pytest.raises(ExpertError, match="not a depth estimator"):
        DepthExpert(str(models["clip"])).check()
    with pytest.raises(ExpertError, match="not OWLv2"):
        OwlDetector(str(models["clip"])).check()
    with pytest.raises(ExpertError, match="never downloaded"):
        resolve_yolo("yolov8n.pt")  # not on disk: ultralytics would download it
    assert resolve_yolo("yolov8s-worldv2.yaml") == "yolov8s-worldv2.yaml"
    with pytest.raises(ExpertError, match="local model dirs"):
        OcrExpert("paddleocr", det_model_dir=str(tmp_path)).check()
    with pytest.raises(ExpertError, match="OCR backend"):
        OcrExpert("tesseract")
    with pytest.raises(ExpertError, match="no such file"):
        Tagger(str(models["clip"]), vocabulary_file=str(tmp_path / "none.txt"))
    assert YoloWorldDetector("yolov8s-worldv2.yaml").name == "ovd"
