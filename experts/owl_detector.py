"""Open-vocabulary detection with transformers OWLv2 (or OWL-ViT), queried per image with the
tagger's tags, as DenseFusion queried OWLv2 with RAM++'s tags.

OWLv2 sees the image padded bottom/right to a square (grey), so its boxes are fractions of that
square; OWL-ViT resizes without padding, so its boxes are fractions of the image itself.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from fusionweave.experts.base import Batch, Resources
from fusionweave.experts.expert import PixelExpert, read_results
from fusionweave.experts.pixels import ImagePreprocessor
from fusionweave.transforms.boxes import detections, normalize_xyxy

PIXELS = "_px_ovd"
FAMILIES = {"owlv2": "Owlv2ForObjectDetection", "owlvit": "OwlViTForObjectDetection"}


class OwlDetector(PixelExpert):
    name = "ovd"
    pixels = PIXELS

    def __init__(self, model: str, revision: str | None = None, resources: Resources = Resources(),
                 confidence: float = 0.1, max_queries: int = 16, **kw: Any):
        super().__init__(model, revision, resources, confidence=confidence, max_queries=max_queries, **kw)
        self._pre: ImagePreprocessor | None = None

    supported = FAMILIES
    config_field = "perceive.ovd.model"
    kind = "OWLv2 / OWL-ViT (or use backend: yolo_world)"

    def preprocessor(self) -> ImagePreprocessor:
        if self._pre is None:
            v2 = self.model_type() == "owlv2"
            self._pre = ImagePreprocessor(self.model, self.revision, square=v2, keep_failed=True,
                                          **({"do_pad": False} if v2 else {}))
        return self._pre

    def setup(self) -> None:
        import transformers
        from transformers import AutoTokenizer

        self._v2 = self.model_type() == "owlv2"
        self._net = self.load(getattr(transformers, FAMILIES["owlv2" if self._v2 else "owlvit"]))
        self._tok = AutoTokenizer.from_pretrained(self.model_path(), local_files_only=True)

    def predict(self, batch: Batch) -> list[Any]:
        import torch

        queries = [[t["tag"] for t in (tags or [])][: self.settings["max_queries"]]
                   for tags in read_results(batch, "tagger")]
        q = max((len(x) for x in queries), default=0)
        if q == 0:
            return [[] for _ in queries]
        flat = [x[i] if i < len(x) else "" for x in queries for i in range(q)]
        enc = self._tok(flat, padding="max_length", max_length=min(16, self._tok.model_max_length), truncation=True,
                        return_tensors="pt").to(self._device)
        with torch.inference_mode():
            out = self._net(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                            pixel_values=self._norm(batch[PIXELS]))
            logits = out.logits.float()  # (B, patches, q)
            mask = torch.tensor([[i < len(x) for i in range(q)] for x in queries], device=logits.device)
            logits = logits.masked_fill(~mask[:, None, :], float("-inf"))
            scores, labels = torch.sigmoid(logits).max(dim=-1)
            boxes = out.pred_boxes.float()  # cx, cy, w, h in [0, 1]
        results = []
        for i, (w, h) in enumerate(zip(batch["width"], batch["height"])):
            keep = (scores[i] >= self.settings["confidence"]).nonzero().flatten()
            cx, cy, bw, bh = boxes[i, keep].cpu().numpy().T
            xyxy = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1)
            scale = np.array([max(w, h)] * 2 if self._v2 else [w, h], np.float64)
            px = xyxy * np.tile(scale, 2)
            names = [queries[i][j] for j in labels[i, keep].tolist()]
            results.append(detections(normalize_xyxy(px, int(w), int(h)), scores[i, keep].tolist(), names, self.name))
        return results

    def teardown(self) -> None:
        self._net = None
