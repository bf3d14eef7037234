"""CLIP-family image embeddings: transformers CLIP or SigLIP vision towers, or any open_clip model
(EVA02-CLIP included; `backend: open_clip`, see `open_clip_backend`).

Work is split so an accelerator is never starved: `ImagePreprocessor` decodes, resizes and crops
on CPU workers and ships uint8 pixels (4x smaller than float); `ImageEmbedder`, the model step,
only rescales, normalises and runs the forward pass. Output: L2-normalised float16 vectors.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from fusionweave.experts.base import Batch, ModelStep, Resources
from fusionweave.experts.open_clip_backend import OpenClip
from fusionweave.experts.pixels import ImagePreprocessor, Normalizer, torch_device
from fusionweave.experts.resolve import resolve_model

__all__ = ["ImageEmbedder", "ImagePreprocessor", "EmbedderError", "embedding_dim", "model_type"]

# model_type -> (transformers class, output attribute holding the pooled image vector)
SUPPORTED = {
    "clip": ("CLIPVisionModelWithProjection", "image_embeds"),
    "clip_vision_model": ("CLIPVisionModelWithProjection", "image_embeds"),
    "siglip": ("SiglipVisionModel", "pooler_output"),
    "siglip_vision_model": ("SiglipVisionModel", "pooler_output"),
}


class EmbedderError(RuntimeError):
    pass


def model_type(path: Path) -> str:
    from transformers import AutoConfig

    mt = AutoConfig.from_pretrained(path, local_files_only=True).model_type
    if mt not in SUPPORTED:
        raise EmbedderError(f"{path}: model_type {mt!r} is not an image embedder fusionweave knows; "
                            f"supported: {sorted(SUPPORTED)}")
    return mt


def embedding_dim(path: Path) -> int:
    """Width of the model's embeddings, read from its config (no weights loaded)."""
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(path, local_files_only=True)
    mt = model_type(path)
    if mt in ("clip", "clip_vision_model"):
        return int(cfg.projection_dim)
    return int((cfg.vision_config if mt == "siglip" else cfg).hidden_size)


class ImageEmbedder(ModelStep):
    """Batch in: `pixels` uint8 (N, 3, H, W). Batch out: the other columns plus `embedding`
    float16 (N, D), unit length."""

    name = "embedder"

    def __init__(self, model: str, revision: str | None = None, resources: Resources = Resources(),
                 dtype: str = "float32", device: str | None = None, backend: str = "transformers",
                 pretrained: str = ""):
        self.model = model
        self.revision = revision
        self.resources = resources
        self.dtype = dtype
        self.device = device
        self.backend = backend
        self.pretrained = pretrained
        self._net: Any = None

    def open_clip(self) -> OpenClip:
        return OpenClip(self.model, self.pretrained, "select.embed")

    def check(self) -> None:
        """The model is there and is an image embedder (no weights read)."""
        if self.backend == "open_clip":
            self.open_clip().check()
        else:
            model_type(resolve_model(self.model, self.revision))

    def dim(self) -> int:
        return self.open_clip().embed_dim() if self.backend == "open_clip" else \
            embedding_dim(resolve_model(self.model, self.revision))

    def preprocessor(self) -> Any:
        """The CPU side: encoded bytes -> uint8 pixels this model takes."""
        if self.backend == "open_clip":
            return self.open_clip().preprocessor()
        return ImagePreprocessor(self.model, self.revision)

    def setup(self) -> None:
        import torch

        torch.set_num_threads(self.resources.torch_threads())
        dev = torch_device(self.resources.num_gpus, self.device)
        if self.backend == "open_clip":
            clip = self.open_clip()
            net, _ = clip.load(dev, getattr(torch, self.dtype))
            self._net, self._norm, self._attr = net, clip.normalizer(dev), None
            return
        import transformers
        from transformers import AutoImageProcessor

        path = resolve_model(self.model, self.revision)
        mt = model_type(path)
        cls_name, self._attr = SUPPORTED[mt]
        kwargs = {}
        if mt == "clip":
            # a full CLIP checkpoint: the projection size lives in the top-level config
            full = transformers.AutoConfig.from_pretrained(path, local_files_only=True)
            vision = full.vision_config
            vision.projection_dim = full.projection_dim
            kwargs["config"] = vision
        try:
            net, info = getattr(transformers, cls_name).from_pretrained(
                path, local_files_only=True, dtype=getattr(torch, self.dtype), output_loading_info=True, **kwargs)
        except RuntimeError as err:  # size mismatches between config and weights
            raise EmbedderError(f"{path}: weights do not fit the model: {str(err)[:300]}") from err
        if info.get("missing_keys"):
            # a checkpoint without its projection would silently embed with random weights
            raise EmbedderError(f"{path}: weights missing for {sorted(info['missing_keys'])[:5]}")
        self._net = net.to(dev).eval()
        self._norm = Normalizer(AutoImageProcessor.from_pretrained(path, local_files_only=True), dev)

    def process(self, batch: Batch) -> Batch:
        import torch

        px = batch["pixels"]
        out = {k: v for k, v in batch.items() if k != "pixels"}
        with torch.inference_mode():
            x = self._norm(px, next(self._net.parameters()).dtype)
            v = (self._net.encode_image(x) if self._attr is None else
                 getattr(self._net(pixel_values=x), self._attr)).float()
            v = torch.nn.functional.normalize(v, dim=-1)
        out["embedding"] = v.cpu().numpy().astype(np.float16)
        return out

    def teardown(self) -> None:
        self._net = None

    def info(self) -> dict[str, Any]:
        return {"name": self.name, "backend": self.backend, "model": str(self.model), "revision": self.revision,
                "pretrained": self.pretrained or None, "dtype": self.dtype}
