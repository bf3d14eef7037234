"""Monocular depth with transformers (Depth Anything, DPT, or any `AutoModelForDepthEstimation`).

The model step returns its raw prediction at model resolution; `postprocess` (CPU) resizes it to
the image, scales it to 16 bits per image (0 = the image's minimum, 65535 = its maximum; the two
raw values are recorded, so the map can be mapped back) and encodes `depth.png`. Per detected
object it records the median of the scaled map inside the box, in [0, 1], so priors can say which
objects are near and far. Depth Anything and DPT predict relative inverse depth (disparity):
larger is nearer.
"""
from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
from PIL import Image

from fusionweave.experts.base import Batch
from fusionweave.experts.expert import ExpertError, PixelExpert, cell, cells, result_column

PIXELS = "_px_depth"
RAW = "_depth_raw"
PNG = "depth_png"
DETECTIONS = "detections"  # merged detections of the detectors (JSON list), when they ran


def to_uint16(depth: np.ndarray) -> tuple[np.ndarray, float, float]:
    lo, hi = float(np.min(depth)), float(np.max(depth))
    span = hi - lo
    scaled = np.zeros(depth.shape, np.uint16) if span <= 0 else np.rint((depth - lo) / span * 65535).astype(np.uint16)
    return scaled, lo, hi


def png16(depth: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(depth, mode="I;16").save(buf, "PNG")
    return buf.getvalue()


def object_depths(depth16: np.ndarray, dets: list[dict]) -> list[dict]:
    h, w = depth16.shape
    out = []
    for d in dets:
        x1, y1, x2, y2 = d["box"]
        c0, c1 = int(np.floor(x1 * w)), max(int(np.ceil(x2 * w)), int(np.floor(x1 * w)) + 1)
        r0, r1 = int(np.floor(y1 * h)), max(int(np.ceil(y2 * h)), int(np.floor(y1 * h)) + 1)
        region = depth16[min(r0, h - 1):min(r1, h), min(c0, w - 1):min(c1, w)]
        out.append({"label": d["label"], "box": d["box"], "median_depth": round(float(np.median(region)) / 65535, 3)})
    return out


class DepthExpert(PixelExpert):
    name = "depth"
    pixels = PIXELS
    has_postprocess = True

    config_field = "perceive.depth.model"
    kind = "a depth estimator"

    @property
    def supported(self) -> Any:  # every depth estimator transformers knows
        from transformers.models.auto.modeling_auto import MODEL_FOR_DEPTH_ESTIMATION_MAPPING_NAMES

        return MODEL_FOR_DEPTH_ESTIMATION_MAPPING_NAMES

    def setup(self) -> None:
        from transformers import AutoModelForDepthEstimation

        self._net = self.load(AutoModelForDepthEstimation)

    def predict(self, batch: Batch) -> list[Any]:
        import torch

        with torch.inference_mode():
            d = self._net(pixel_values=self._norm(batch[PIXELS])).predicted_depth.float().cpu().numpy()
        if not np.isfinite(d).all():
            raise ExpertError("depth prediction is not finite")
        return list(d.astype(np.float16))  # float16 halves the transfer to postprocess

    def process(self, batch: Batch) -> Batch:
        maps, errors, per_row = self.run_isolated(batch)
        batch.pop(PIXELS)
        batch[result_column(self.name)] = cells([None] * len(maps), errors, per_row)
        shape = next((m.shape for m in maps if m is not None), (1, 1))
        raw = np.zeros((len(maps), *shape), np.float16)
        for i, m in enumerate(maps):
            if m is not None:
                raw[i] = m
        batch[RAW] = raw
        return batch

    def postprocess(self, batch: Batch) -> Batch:
        col = result_column(self.name)
        raw = batch.pop(RAW)
        dets = batch.get(DETECTIONS)
        pngs, cells = [], []
        for i, c in enumerate(batch[col]):
            rec = json.loads(c)
            if rec["error"] is not None:
                pngs.append(b"")
                cells.append(c)
                continue
            w, h = int(batch["width"][i]), int(batch["height"][i])
            up = np.asarray(Image.fromarray(raw[i].astype(np.float32), mode="F").resize((w, h), Image.BICUBIC))
            scaled, lo, hi = to_uint16(up)
            pngs.append(png16(scaled))
            rec["results"] = {"member": "depth.png", "encoding": "uint16 PNG, 0..65535 = min..max of the raw map",
                              "raw_min": round(lo, 6), "raw_max": round(hi, 6), "larger_is_nearer": True,
                              "objects": object_depths(scaled, json.loads(dets[i]) if dets is not None else [])}
            cells.append(cell(rec))
        batch[col] = np.array(cells, dtype=object)
        batch[PNG] = np.array(pngs, dtype=object)
        return batch

    def teardown(self) -> None:
        self._net = None
