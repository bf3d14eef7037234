"""Open-vocabulary image tags from a CLIP or SigLIP model over a tag vocabulary (DenseFusion used
RAM++; a CLIP-style zero-shot tagger is its open-weights stand-in here).

The vocabulary's prompts are embedded once per worker at setup. Scores: SigLIP's own sigmoid of
its calibrated logit (multi-label by training); CLIP's softmax over the vocabulary (its zero-shot
probability). Tags above `threshold`, best first, at most `top_k`.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from fusionweave.experts.base import Batch, Resources
from fusionweave.experts.expert import ExpertError, PixelExpert
from fusionweave.experts import vocabulary

PIXELS = "_px_tagger"
FAMILIES = ("clip", "siglip")


class Tagger(PixelExpert):
    name = "tagger"
    pixels = PIXELS

    def __init__(self, model: str, revision: str | None = None, resources: Resources = Resources(),
                 vocabulary_file: str = vocabulary.DEFAULT, prompt: str = "a photo of a {}.",
                 threshold: float = 0.1, top_k: int = 10, **kw: Any):
        super().__init__(model, revision, resources, vocabulary=str(vocabulary_file), prompt=prompt,
                         threshold=threshold, top_k=top_k, **kw)
        if "{}" not in prompt:
            raise ExpertError("perceive.tagger.prompt must contain {} where the tag goes")
        self.tags = vocabulary.load(vocabulary_file)

    supported = FAMILIES
    config_field = "perceive.tagger.model"
    kind = "a CLIP/SigLIP image-text model"

    def setup(self) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        self._net = self.load(AutoModel)
        path, dev = self.model_path(), self._device
        self._siglip = self._net.config.model_type == "siglip"
        tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
        prompts = [self.settings["prompt"].format(t) for t in self.tags]
        chunks = []
        with torch.inference_mode():
            for i in range(0, len(prompts), 256):
                # SigLIP was trained on max_length padding; CLIP pads to the longest
                enc = tok(prompts[i:i + 256], padding="max_length" if self._siglip else True, truncation=True,
                          return_tensors="pt").to(dev)
                out = self._net.get_text_features(**enc).pooler_output
                chunks.append(torch.nn.functional.normalize(out.float(), dim=-1))
        self._text = torch.cat(chunks)
        self._scale = self._net.logit_scale.exp().float()
        self._bias = self._net.logit_bias.float() if self._siglip else None

    def predict(self, batch: Batch) -> list[Any]:
        import torch

        with torch.inference_mode():
            img = self._net.get_image_features(pixel_values=self._norm(batch[PIXELS])).pooler_output
            logits = torch.nn.functional.normalize(img.float(), dim=-1) @ self._text.T * self._scale
            probs = torch.sigmoid(logits + self._bias) if self._siglip else logits.softmax(dim=-1)
        probs = probs.cpu().numpy()
        k = min(int(self.settings["top_k"]), probs.shape[1])
        out = []
        for p in probs:
            best = np.argsort(-p, kind="stable")[:k]
            out.append([{"tag": self.tags[j], "score": round(float(p[j]), 4)} for j in best
                        if p[j] >= self.settings["threshold"]])
        return out

    def teardown(self) -> None:
        self._net = None
