"""Open-vocabulary image tags from a CLIP or SigLIP model over a tag vocabulary (DenseFusion used
RAM++; a CLIP-style zero-shot tagger is its open-weights stand-in here).

The vocabulary's prompts are embedded once per worker at setup. Scores: SigLIP's own sigmoid of
its calibrated logit (multi-label by training); CLIP's softmax over the vocabulary (its zero-shot
probability). Tags above `threshold`, best first, at most `top_k`.

`OpenClipTagger` runs any open_clip model (EVA02-CLIP included) the same way; open_clip models
with a `logit_bias` (SigLIP) score with the sigmoid.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from fusionweave.experts.base import Batch, Resources
from fusionweave.experts.expert import ExpertError, PixelExpert
from fusionweave.experts import vocabulary
from fusionweave.experts.open_clip_backend import OpenClip
from fusionweave.experts.pixels import torch_device

PIXELS = "_px_tagger"
FAMILIES = ("clip", "siglip")


def text_features(encode: Any, tokenize: Any, prompts: list[str], chunk: int = 256) -> Any:
    """Unit-length text embeddings of `prompts`, `chunk` at a time: `tokenize(list)` -> model
    inputs, `encode(inputs)` -> (n, D) tensor."""
    import torch

    chunks = []
    with torch.inference_mode():
        for i in range(0, len(prompts), chunk):
            chunks.append(torch.nn.functional.normalize(encode(tokenize(prompts[i:i + chunk])).float(), dim=-1))
    return torch.cat(chunks)


def hf_text_encoder(net: Any, tok: Any, device: str, siglip: bool) -> tuple[Any, Any]:
    """(encode, tokenize) for `text_features` over a transformers CLIP/SigLIP model."""
    # SigLIP was trained on max_length padding; CLIP pads to the longest
    def tokenize(texts: list[str]) -> Any:
        return tok(texts, padding="max_length" if siglip else True, truncation=True, return_tensors="pt").to(device)

    return (lambda enc: net.get_text_features(**enc).pooler_output), tokenize


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

    def prompts(self) -> list[str]:
        return [self.settings["prompt"].format(t) for t in self.tags]

    def setup(self) -> None:
        from transformers import AutoModel, AutoTokenizer

        self._net = self.load(AutoModel)
        self._siglip = self._net.config.model_type == "siglip"
        tok = AutoTokenizer.from_pretrained(self.model_path(), local_files_only=True)
        self._text = text_features(*hf_text_encoder(self._net, tok, self._device, self._siglip), self.prompts())
        self._scale = self._net.logit_scale.exp().float()
        self._bias = self._net.logit_bias.float() if self._siglip else None

    def image_features(self, px: Any) -> Any:
        return self._net.get_image_features(pixel_values=self._norm(px)).pooler_output

    def predict(self, batch: Batch) -> list[Any]:
        import torch

        with torch.inference_mode():
            img = self.image_features(batch[PIXELS])
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


class OpenClipTagger(Tagger):
    """The tagger on an open_clip model: `model` an open_clip name or model-config .json,
    `pretrained` a local checkpoint file (empty: random weights)."""

    kind = "an open_clip image-text model"

    def __init__(self, model: str, pretrained: str = "", resources: Resources = Resources(), **kw: Any):
        super().__init__(model, None, resources, backend="open_clip", pretrained=pretrained, **kw)
        self.clip = OpenClip(model, pretrained, "perceive.tagger")

    def check(self) -> None:
        self.clip.check()

    def preprocessor(self) -> Any:
        if getattr(self, "_pre", None) is None:
            self._pre = self.clip.preprocessor(keep_failed=True)
        return self._pre

    def setup(self) -> None:
        import torch

        torch.set_num_threads(self.resources.torch_threads())
        self._device = torch_device(self.resources.num_gpus)
        self._net, tok = self.clip.load(self._device)
        self._norm = self.clip.normalizer(self._device)
        self._text = text_features(self._net.encode_text, lambda texts: tok(texts).to(self._device), self.prompts())
        self._scale = self._net.logit_scale.exp().float()
        bias = getattr(self._net, "logit_bias", None)
        self._siglip = bias is not None
        self._bias = bias.float() if bias is not None else None

    def image_features(self, px: Any) -> Any:
        return self._net.encode_image(self._norm(px))
