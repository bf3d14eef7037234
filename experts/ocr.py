"""OCR lines (text, box normalised to [0, 1], confidence) above a confidence floor.

Backends:
- `rapidocr` (default): RapidOCR on onnxruntime; its wheel ships the PP-OCRv4 detection and
  recognition models, so it runs offline with no setup.
- `paddleocr`: PaddleOCR 3.x (DenseFusion's OCR expert), given local model dirs (official ones,
  or RapidOCR's converted by `fusionweave models paddleocr --from-rapidocr`, see
  `paddleocr_models`). It checks its model hosts at start unless
  `PADDLE_PDX_DISABLE_MODEL_SOURCE_CHECK=True`, which is set here. `enable_mkldnn` defaults off:
  on some CPUs oneDNN fails ("ConvertPirAttribute2RuntimeAttribute not support").
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from fusionweave.experts.base import Batch, Resources
from fusionweave.experts.expert import Expert, ExpertError, decoded
from fusionweave.experts.paddleocr_models import missing_files, model_name
from fusionweave.transforms.boxes import normalize_xyxy

BACKENDS = ("rapidocr", "paddleocr")


def quad_to_xyxy(points: Any) -> list[float]:
    p = np.asarray(points, np.float64).reshape(-1, 2)
    return [p[:, 0].min(), p[:, 1].min(), p[:, 0].max(), p[:, 1].max()]


def lines(texts: list[str], scores: list[float], quads: list[Any], w: int, h: int, floor: float) -> list[dict]:
    if not texts:
        return []
    boxes = normalize_xyxy(np.array([quad_to_xyxy(q) for q in quads]), w, h)
    return [{"text": t, "box": [float(v) for v in b], "score": round(float(s), 4)}
            for t, s, b in zip(texts, scores, boxes) if s >= floor and t.strip()]


class OcrExpert(Expert):
    name = "ocr"

    def __init__(self, model: str = "rapidocr", revision: str | None = None, resources: Resources = Resources(),
                 min_confidence: float = 0.5, det_model_dir: str | None = None, rec_model_dir: str | None = None,
                 enable_mkldnn: bool = False, **kw: Any):
        if model not in BACKENDS:
            raise ExpertError(f"perceive.ocr.model: {model!r} is not an OCR backend; choose one of {BACKENDS}")
        extra = {"enable_mkldnn": enable_mkldnn} if model == "paddleocr" else {}
        super().__init__(model, revision, resources, min_confidence=min_confidence, det_model_dir=det_model_dir,
                         rec_model_dir=rec_model_dir, **extra, **kw)

    def check(self) -> None:
        if self.model == "paddleocr":
            missing = [k for k in ("det_model_dir", "rec_model_dir")
                       if not self.settings.get(k) or not Path(self.settings[k]).is_dir()]
            if missing:
                raise ExpertError(f"perceive.ocr: the paddleocr backend needs local model dirs; missing or not a "
                                  f"folder: {', '.join(f'{k}={self.settings.get(k)!r}' for k in missing)} "
                                  "(PaddleOCR's own download is never used; `fusionweave models paddleocr "
                                  "--from-rapidocr --out DIR` makes both offline)")
            partial = {k: missing_files(self.settings[k]) for k in ("det_model_dir", "rec_model_dir")}
            partial = {k: v for k, v in partial.items() if v}
            if partial:
                raise ExpertError("perceive.ocr: incomplete PaddleOCR model folder: " + "; ".join(
                    f"{k}={self.settings[k]!r} lacks {', '.join(v)}" for k, v in partial.items()))

    def setup(self) -> None:
        self.check()
        threads = self.resources.torch_threads()
        if self.model == "rapidocr":
            from rapidocr_onnxruntime import RapidOCR

            self._ocr = RapidOCR(intra_op_num_threads=threads, inter_op_num_threads=1)
        else:
            os.environ["PADDLE_PDX_DISABLE_MODEL_SOURCE_CHECK"] = "True"
            from paddleocr import PaddleOCR

            det, rec = self.settings["det_model_dir"], self.settings["rec_model_dir"]
            self._ocr = PaddleOCR(text_detection_model_dir=det, text_detection_model_name=model_name(det),
                                  text_recognition_model_dir=rec, text_recognition_model_name=model_name(rec),
                                  use_doc_orientation_classify=False, use_doc_unwarping=False,
                                  use_textline_orientation=False, cpu_threads=threads,
                                  enable_mkldnn=self.settings["enable_mkldnn"],
                                  device="gpu" if self.resources.num_gpus > 0 else "cpu")

    def read(self, img: np.ndarray) -> list[dict]:
        h, w = img.shape[:2]
        floor = self.settings["min_confidence"]
        bgr = np.ascontiguousarray(img[..., ::-1])  # both backends take OpenCV-order arrays
        if self.model == "rapidocr":
            res, _ = self._ocr(bgr)
            res = res or []
            return lines([r[1] for r in res], [float(r[2]) for r in res], [r[0] for r in res], w, h, floor)
        r = self._ocr.predict(bgr)[0]
        return lines(list(r["rec_texts"]), [float(s) for s in r["rec_scores"]], list(r["rec_polys"]), w, h, floor)

    def predict(self, batch: Batch) -> list[Any]:
        return [self.read(img) for img in decoded(batch)]

    def teardown(self) -> None:
        self._ocr = None
