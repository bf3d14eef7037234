"""open_clip models (EVA02-CLIP, as DenseFusion embedded with, and every other open_clip
architecture) for the embedder and the tagger.

A model is an open_clip model name (`EVA02-B-16`, `ViT-B-32`, ...) or the path of an open_clip
model-config JSON (registered under its file stem), plus `pretrained`: a local checkpoint file,
or empty for random weights (tests, benchmarks at real size). Nothing is downloaded: open_clip's
pretrained tags would fetch weights, so only files are accepted. Pixels follow the model's own
preprocessing config (size, resize mode, interpolation, mean/std): resized on CPU workers as uint8,
normalised next to the model by `Normalizer`; text goes through the model's own tokenizer.
"""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from fusionweave.experts.expert import ExpertError
from fusionweave.experts.pixels import Normalizer, decode_rgb, error_text


class OpenClipError(ExpertError):
    pass


class OpenClip:
    """One open_clip model as configured under `where` (e.g. "select.embed"): checks without
    loading weights, the CPU preprocessor, and the loaded model."""

    def __init__(self, model: str, pretrained: str = "", where: str = "open_clip"):
        self.model = str(model)
        self.pretrained = str(pretrained or "")
        self.where = where

    def name(self) -> str:
        """The open_clip model name (a config JSON is registered under its stem)."""
        import open_clip

        p = Path(self.model).expanduser()
        if p.suffix == ".json":
            if not p.is_file():
                raise OpenClipError(f"{self.where}.model: open_clip model config {p.resolve()} not found")
            open_clip.add_model_config(p)
            return p.stem
        return self.model

    def config(self) -> dict[str, Any]:
        import open_clip

        name = self.name()
        cfg = open_clip.get_model_config(name)
        if cfg is None:
            raise OpenClipError(f"{self.where}.model: {self.model!r} is not an open_clip model name or a model-config "
                                f".json file; known names include {[m for m in open_clip.list_models() if 'EVA' in m]}")
        return cfg

    def check(self) -> None:
        """Before any work: the architecture is known and the checkpoint file exists (no weights read)."""
        self.config()
        if self.pretrained:
            p = Path(self.pretrained).expanduser()
            if not p.is_file():
                raise OpenClipError(f"{self.where}.pretrained: checkpoint file {p.resolve()} not found (open_clip's "
                                    "pretrained tags would download weights, which fusionweave never does: give a "
                                    "local file, or leave it empty for random weights)")

    def embed_dim(self) -> int:
        return int(self.config()["embed_dim"])

    def preprocess_cfg(self) -> Any:
        from open_clip.transform import PreprocessCfg, merge_preprocess_dict
        from dataclasses import asdict

        cfg = self.config()
        merged = merge_preprocess_dict(asdict(PreprocessCfg()), cfg.get("preprocess_cfg", {}))
        merged["size"] = cfg.get("vision_cfg", {}).get("image_size", merged["size"])
        return PreprocessCfg(**merged)

    def preprocessor(self, keep_failed: bool = False) -> "OpenClipPreprocessor":
        return OpenClipPreprocessor(self, keep_failed)

    def normalizer(self, device: str) -> Normalizer:
        pp = self.preprocess_cfg()
        return Normalizer(SimpleNamespace(image_mean=pp.mean, image_std=pp.std, rescale_factor=1 / 255), device)

    def load(self, device: str, dtype: Any = None) -> tuple[Any, Any]:
        """(model in eval mode on `device`, its tokenizer)."""
        import open_clip

        self.check()
        name = self.name()
        try:
            net = open_clip.create_model(name, pretrained=self.pretrained or None, device=device)
        except RuntimeError as err:  # state dict does not fit the architecture
            raise OpenClipError(f"{self.where}.pretrained: {self.pretrained} does not fit {name}: {str(err)[:300]}") \
                from err
        if dtype is not None:
            net = net.to(dtype)
        return net.eval(), open_clip.get_tokenizer(name)


class OpenClipPreprocessor:
    """Encoded image bytes -> uint8 (N, 3, H, W) by the model's own resize/crop (mean 0, std 1),
    with per-image errors, as `ImagePreprocessor` does for transformers models."""

    def __init__(self, clip: OpenClip, keep_failed: bool = False):
        self.clip = clip
        self.keep_failed = keep_failed
        self._tf: Any = None

    def transform(self) -> Any:
        if self._tf is None:
            from open_clip import image_transform

            pp = self.clip.preprocess_cfg()
            self._tf = image_transform(pp.size, is_train=False, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0),
                                       resize_mode=pp.resize_mode, interpolation=pp.interpolation,
                                       fill_color=pp.fill_color)
        return self._tf

    def __call__(self, images: list[bytes]) -> tuple[np.ndarray, list[str | None]]:
        px: list[np.ndarray | None] = []
        errors: list[str | None] = []
        for data in images:
            try:
                px.append(np.clip(np.rint(self.transform()(decode_rgb(data)).numpy() * 255), 0, 255).astype(np.uint8))
                errors.append(None)
            except Exception as err:  # noqa: BLE001 - any decoder failure is a per-image error
                px.append(None)
                errors.append(error_text(err))
        good = [p for p in px if p is not None]
        if not good:
            return np.zeros((len(images) if self.keep_failed else 0, 3, 1, 1), np.uint8), errors
        if self.keep_failed:
            return np.stack([p if p is not None else np.zeros_like(good[0]) for p in px]), errors
        return np.stack(good), errors
