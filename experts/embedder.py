"""CLIP-family image embeddings (transformers CLIP or SigLIP vision towers).

Work is split so an accelerator is never starved: `ImagePreprocessor` decodes, resizes and crops
on CPU workers and ships uint8 pixels (4x smaller than float); `ImageEmbedder`, the model step,
only rescales, normalises and runs the forward pass. Output: L2-normalised float16 vectors.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from experts.base import Batch, ModelStep, Resources
from experts.resolve import resolve_model
from transforms.image_validate import to_rgb

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


class ImagePreprocessor:
    """Encoded image bytes -> uint8 (N, 3, H, W), the model's own resize/crop without the
    rescale and normalisation (those run next to the model)."""

    def __init__(self, model: str, revision: str | None = None):
        self.model = model
        self.revision = revision
        self._proc: Any = None

    def _processor(self) -> Any:
        if self._proc is None:
            from transformers import AutoImageProcessor

            self._proc = AutoImageProcessor.from_pretrained(resolve_model(self.model, self.revision),
                                                            local_files_only=True)
        return self._proc

    def __call__(self, images: list[bytes]) -> tuple[np.ndarray, list[str | None]]:
        """Pixels of the images that decode, and per image None or why it could not be used."""
        decoded: list[Image.Image] = []
        errors: list[str | None] = []
        for data in images:
            try:
                with Image.open(io.BytesIO(data)) as im:
                    im.load()
                    decoded.append(to_rgb(im))
                errors.append(None)
            except Exception as err:  # noqa: BLE001 - any decoder failure is a per-image reject
                errors.append(f"{type(err).__name__}: {err}"[:200])
        if not decoded:
            return np.zeros((0, 3, 1, 1), np.uint8), errors
        px = self._processor()(decoded, do_rescale=False, do_normalize=False, return_tensors="np")["pixel_values"]
        return np.clip(np.rint(px), 0, 255).astype(np.uint8), errors


class ImageEmbedder(ModelStep):
    """Batch in: `pixels` uint8 (N, 3, H, W). Batch out: the other columns plus `embedding`
    float16 (N, D), unit length."""

    name = "embedder"

    def __init__(self, model: str, revision: str | None = None, resources: Resources = Resources(),
                 dtype: str = "float32", device: str | None = None):
        self.model = model
        self.revision = revision
        self.resources = resources
        self.dtype = dtype
        self.device = device
        self._net: Any = None

    def setup(self) -> None:
        import torch
        import transformers
        from transformers import AutoImageProcessor

        torch.set_num_threads(self.resources.torch_threads())
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
        dev = self.device or ("cuda" if self.resources.num_gpus > 0 and torch.cuda.is_available() else "cpu")
        self._net = net.to(dev).eval()
        proc = AutoImageProcessor.from_pretrained(path, local_files_only=True)
        shape = (1, 3, 1, 1)
        self._scale = float(getattr(proc, "rescale_factor", 1 / 255))
        self._mean = torch.tensor(proc.image_mean, dtype=torch.float32, device=dev).reshape(shape)
        self._std = torch.tensor(proc.image_std, dtype=torch.float32, device=dev).reshape(shape)
        self._device = dev

    def process(self, batch: Batch) -> Batch:
        import torch

        px = batch["pixels"]
        out = {k: v for k, v in batch.items() if k != "pixels"}
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(px)).to(self._device).float() * self._scale
            x = ((x - self._mean) / self._std).to(next(self._net.parameters()).dtype)
            v = getattr(self._net(pixel_values=x), self._attr).float()
            v = torch.nn.functional.normalize(v, dim=-1)
        out["embedding"] = v.cpu().numpy().astype(np.float16)
        return out

    def teardown(self) -> None:
        self._net = None

    def info(self) -> dict[str, Any]:
        return {"name": self.name, "model": str(self.model), "revision": self.revision, "dtype": self.dtype}
