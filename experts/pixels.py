"""Pixels for model steps, split so an accelerator is never starved: `ImagePreprocessor` decodes,
resizes and crops on CPU workers and ships uint8 pixels (4x smaller than float); `Normalizer`
does the rescale and mean/std next to the model, on its device."""
from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image, ImageOps

from fusionweave.experts.resolve import resolve_model
from fusionweave.transforms.image_validate import open_image, to_rgb


def decode_rgb(data: bytes) -> Image.Image:
    """Encoded bytes -> an upright RGB image (EXIF orientation applied). Raises on bad data."""
    with open_image(data) as im:
        im.load()
        return to_rgb(ImageOps.exif_transpose(im))


def error_text(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}"[:300]


def pad_square(img: Image.Image, fill: int = 128) -> Image.Image:
    """Pad bottom/right to a square, as OWLv2's processor does (grey 0.5)."""
    side = max(img.size)
    if img.size == (side, side):
        return img
    out = Image.new("RGB", (side, side), (fill, fill, fill))
    out.paste(img, (0, 0))
    return out


class ImagePreprocessor:
    """Encoded image bytes -> uint8 (N, 3, H, W): the model's own resize/crop without the rescale
    and normalisation. Per image None or why it could not be used; failed images are left out of
    the pixels (`keep_failed=False`) or filled with zeros so rows stay aligned (`keep_failed=True`)."""

    def __init__(self, model: str, revision: str | None = None, square: bool = False,
                 keep_failed: bool = False, **processor_kwargs: Any):
        self.model = model
        self.revision = revision
        self.square = square
        self.keep_failed = keep_failed
        self.processor_kwargs = processor_kwargs
        self._proc: Any = None

    def processor(self) -> Any:
        if self._proc is None:
            from transformers import AutoImageProcessor

            self._proc = AutoImageProcessor.from_pretrained(resolve_model(self.model, self.revision),
                                                            local_files_only=True)
        return self._proc

    def __call__(self, images: list[bytes]) -> tuple[np.ndarray, list[str | None]]:
        decoded: list[Image.Image] = []
        errors: list[str | None] = []
        for data in images:
            try:
                img = decode_rgb(data)
                decoded.append(pad_square(img) if self.square else img)
                errors.append(None)
            except Exception as err:  # noqa: BLE001 - any decoder failure is a per-image error
                errors.append(error_text(err))
        if not decoded:
            return np.zeros((0, 3, 1, 1), np.uint8), errors
        px = self.processor()(decoded, do_rescale=False, do_normalize=False, return_tensors="np",
                              **self.processor_kwargs)["pixel_values"]
        px = np.clip(np.rint(px), 0, 255).astype(np.uint8)
        if self.keep_failed and len(decoded) < len(images):
            full = np.zeros((len(images), *px.shape[1:]), np.uint8)
            full[[i for i, e in enumerate(errors) if e is None]] = px
            px = full
        return px, errors


class Normalizer:
    """uint8 pixels -> the float input the model expects (rescale, mean, std), on `device`."""

    def __init__(self, processor: Any, device: str):
        import torch

        shape = (1, 3, 1, 1)
        self.scale = float(getattr(processor, "rescale_factor", 1 / 255))
        self.mean = torch.tensor(processor.image_mean, dtype=torch.float32, device=device).reshape(shape)
        self.std = torch.tensor(processor.image_std, dtype=torch.float32, device=device).reshape(shape)
        self.device = device

    def __call__(self, px: np.ndarray, dtype: Any = None) -> Any:
        import torch

        x = torch.from_numpy(np.ascontiguousarray(px)).to(self.device).float() * self.scale
        x = (x - self.mean) / self.std
        return x if dtype is None else x.to(dtype)


def torch_device(num_gpus: float, device: str | None = None) -> str:
    import torch

    return device or ("cuda" if num_gpus > 0 and torch.cuda.is_available() else "cpu")
