"""Any-resolution image input for EVE.

The longest side is resized to `max_side` keeping the aspect ratio; the canvas is the resized
image with each side rounded UP to a multiple of 2 x patch (one 2x2 pooling window), the rest
filled with the mean colour. After the patch embedding and 2x2 pooling an image is an h x w grid,
h = H / (2 patch), w = W / (2 patch), and becomes 1 + h (w + 1) tokens (CLS, and a split token
after each row): 601 at 672 px with patch 14. Images in a batch are padded further to the largest
canvas; their own canvas (`grid`) is what the model reads, so extra padding never changes tokens.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class EveImage:
    pixels: torch.Tensor  # (3, H, W) float, normalised; the padding is the mean colour (0)
    valid: tuple[int, int]  # the resized image's height and width in pixels (the rest is padding)
    grid: tuple[int, int]  # h, w: the pooled patch grid of the canvas

    def mask(self) -> torch.Tensor:
        """(H, W) bool: True on image pixels."""
        m = torch.zeros(self.pixels.shape[1:], dtype=torch.bool)
        m[:self.valid[0], :self.valid[1]] = True
        return m


def num_tokens(grid: tuple[int, int]) -> int:
    h, w = grid
    return 1 + h * (w + 1)


def resized_size(height: int, width: int, max_side: int) -> tuple[int, int]:
    scale = max_side / max(height, width)
    return max(1, min(max_side, round(height * scale))), max(1, min(max_side, round(width * scale)))


def canvas_grid(height: int, width: int, max_side: int, patch: int) -> tuple[int, int]:
    """The pooled grid (h, w) an image of this size becomes."""
    rh, rw = resized_size(height, width, max_side)
    return math.ceil(rh / (2 * patch)), math.ceil(rw / (2 * patch))


def preprocess(image: Image.Image | torch.Tensor | np.ndarray, max_side: int = 672, patch: int = 14,
               mean: tuple[float, float, float] = CLIP_MEAN, std: tuple[float, float, float] = CLIP_STD) -> EveImage:
    """An RGB image (PIL, HWC uint8 array or CHW uint8 tensor) as EVE's model input."""
    if max_side % (2 * patch):
        raise ValueError(f"max_side {max_side} is not a multiple of 2 x patch ({2 * patch})")
    if isinstance(image, torch.Tensor):
        image = image.permute(1, 2, 0).numpy()
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    image = image.convert("RGB")
    rh, rw = resized_size(image.height, image.width, max_side)
    h, w = canvas_grid(image.height, image.width, max_side, patch)
    arr = np.asarray(image.resize((rw, rh), Image.BICUBIC), dtype=np.float32) / 255.0
    m, s = torch.tensor(mean).view(3, 1, 1), torch.tensor(std).view(3, 1, 1)
    pixels = torch.zeros(3, 2 * patch * h, 2 * patch * w)
    pixels[:, :rh, :rw] = (torch.from_numpy(arr).permute(2, 0, 1) - m) / s
    return EveImage(pixels, (rh, rw), (h, w))


def pad_batch(images: list[EveImage]) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 3, Hmax, Wmax) pixels padded with the mean colour and (B, 2) long grids."""
    hm = max(i.pixels.shape[1] for i in images)
    wm = max(i.pixels.shape[2] for i in images)
    out = torch.zeros(len(images), 3, hm, wm)
    for b, im in enumerate(images):
        out[b, :, :im.pixels.shape[1], :im.pixels.shape[2]] = im.pixels
    return out, torch.tensor([im.grid for im in images], dtype=torch.long)
