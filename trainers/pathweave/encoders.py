"""One frozen encoder per modality, declared in YAML, and the step from an MCL batch to its
features: (B, N, D) tokens and a (B, N) mask of real tokens.

- `vision` (any transformers vision model taking `pixel_values`, e.g. CLIP/EVA): images; video
  frames one by one, their tokens concatenated in time order with a fixed sinusoidal frame code
  (no parameter: the order must reach the bridge, and nothing here trains); depth as RGB-D when the
  model has 4 input channels, else the depth map repeated on 3 channels.
- `audio` (a transformers audio model taking `input_values` of (frames, bins), e.g. AST): each
  512-frame fbank chunk encoded alone, the chunks' tokens concatenated with a chunk code; eval
  samples have different chunk counts, the padding is masked.
- `points`: no transformers point model exists; `PointEncoder` is a frozen PointNet-style tokenizer
  (shared per-point MLP, max-pooled over the 8 octants and the whole cloud, each token with a fixed
  code of its region) saved as a folder (config.json + weights), which `fusionweave tiny-model
  pointcloud-encoder` writes.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from fusionweave.experts.point_encoder import PointEncoder

CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


def sinusoid(index: int, dim: int) -> torch.Tensor:
    """A fixed code for position `index` (frame or chunk), the transformer's sinusoidal form."""
    i = torch.arange(0, dim, 2, dtype=torch.float32)
    angle = index / torch.pow(10_000.0, i / dim)
    code = torch.zeros(dim)
    code[0::2], code[1::2] = torch.sin(angle), torch.cos(angle[: dim // 2])
    return code


def load_encoder(kind: str, model: str, revision: str | None = None) -> tuple[nn.Module, int]:
    """(the frozen model, its feature width)."""
    from fusionweave.experts.resolve import resolve_model

    path = resolve_model(model, revision)
    if kind == "points":
        enc: nn.Module = PointEncoder.load(Path(path))
        width = enc.hidden_size  # type: ignore[assignment]
    else:
        from transformers import AutoModel

        enc = AutoModel.from_pretrained(path)
        if hasattr(enc, "vision_model") and kind == "vision":  # a full CLIP: its vision tower
            enc = enc.vision_model
        width = int(getattr(enc.config, "hidden_size"))
    enc.requires_grad_(False)
    enc.eval()
    return enc, width


class ModalityEncoder(nn.Module):
    """A frozen encoder and the modality's batch -> features step."""

    def __init__(self, modality: str, kind: str, model: str, revision: str | None = None):
        super().__init__()
        self.modality, self.kind = modality, kind
        self.model, self.width = load_encoder(kind, model, revision)
        cfg = getattr(self.model, "config", None)
        self.image_size = int(getattr(cfg, "image_size", 224) or 224)
        self.channels = int(getattr(cfg, "num_channels", 3) or 3)

    def train(self, mode: bool = True) -> "ModalityEncoder":
        return super().train(False)  # frozen: always in eval mode (no dropout), whatever the wrapper says

    def _pixels(self, images: list[torch.Tensor] | torch.Tensor, device: torch.device) -> torch.Tensor:
        """uint8 (3, H, W) images -> normalised (B, 3, S, S) at the encoder's size."""
        out = [F.interpolate(im.to(device, torch.float32)[None] / 255.0, size=(self.image_size,) * 2,
                             mode="bilinear", align_corners=False) for im in images]
        x = torch.cat(out)
        mean = torch.tensor(CLIP_MEAN, device=device)[None, :, None, None]
        std = torch.tensor(CLIP_STD, device=device)[None, :, None, None]
        return (x - mean) / std

    def _vision(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixels).last_hidden_state

    @torch.no_grad()
    def forward(self, batch: dict[str, Any], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        feats = getattr(self, f"_{self.modality}")(batch, device)
        if isinstance(feats, tuple):
            return feats
        return feats, torch.ones(feats.shape[:2], dtype=torch.bool, device=device)

    def _image(self, batch: dict[str, Any], device: torch.device) -> torch.Tensor:
        return self._vision(self._pixels(_images(batch), device))

    def _video(self, batch: dict[str, Any], device: torch.device) -> torch.Tensor:
        frames = batch["frames"]
        frames = torch.stack(frames) if isinstance(frames, list) else frames  # (B, T, 3, H, W)
        b, t = frames.shape[:2]
        f = self._vision(self._pixels(list(frames.flatten(0, 1)), device))  # (B*T, N, D)
        f = f.view(b, t, *f.shape[1:])
        codes = torch.stack([sinusoid(i, f.shape[-1]) for i in range(t)]).to(device)
        return (f + codes[None, :, None, :]).flatten(1, 2)

    def _depth(self, batch: dict[str, Any], device: torch.device) -> torch.Tensor:
        depth = [d.to(device, torch.float32)[None, None] / 65535.0 for d in batch["depth"]]
        depth = torch.cat([F.interpolate(d, size=(self.image_size,) * 2, mode="bilinear", align_corners=False)
                           for d in depth])
        if self.channels == 4:
            x = torch.cat([self._pixels(_images(batch), device), (depth - 0.5) / 0.25], 1)
        else:
            x = ((depth - 0.5) / 0.25).expand(-1, 3, -1, -1)
        return self._vision(x)

    def _audio(self, batch: dict[str, Any], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        fb = batch["fbank.npy"]
        items = [torch.as_tensor(x) for x in (fb if isinstance(fb, list) else list(fb))]  # each (k, 512, bins)
        k = max(x.shape[0] for x in items)
        chunks = torch.cat([x for x in items]).to(device, torch.float32)
        frames = int(getattr(self.model.config, "max_length", chunks.shape[1]))
        if chunks.shape[1] < frames:  # e.g. AudioSet's AST reads 1,024 frames: a 512-frame chunk is zero-padded
            chunks = F.pad(chunks, (0, 0, 0, frames - chunks.shape[1]))
        enc = self.model(input_values=chunks).last_hidden_state  # (sum k, N, D)
        n, d = enc.shape[1:]
        feats = torch.zeros(len(items), k, n, d, device=device)
        mask = torch.zeros(len(items), k, n, dtype=torch.bool, device=device)
        at = 0
        for i, x in enumerate(items):
            feats[i, :x.shape[0]] = enc[at:at + x.shape[0]]
            mask[i, :x.shape[0]] = True
            at += x.shape[0]
        codes = torch.stack([sinusoid(i, d) for i in range(k)]).to(device)
        return (feats + codes[None, :, None, :]).flatten(1, 2), mask.flatten(1, 2)

    def _pointcloud(self, batch: dict[str, Any], device: torch.device) -> torch.Tensor:
        pts = batch["npy"]
        pts = torch.stack([torch.as_tensor(p) for p in pts]) if isinstance(pts, list) else pts
        f = self.model(pts.to(device, torch.float32))  # (B, G, D): whole cloud, then regions
        codes = torch.stack([sinusoid(i, f.shape[-1]) for i in range(f.shape[1])]).to(device)
        return f + codes[None]  # which region a token pools, as frames and chunks carry their index


def _images(batch: dict[str, Any]) -> list[torch.Tensor]:
    for ext in ("jpg", "png", "jpeg", "webp"):
        if ext in batch:
            ims = batch[ext]
            return list(ims) if isinstance(ims, torch.Tensor) else ims
    raise KeyError(f"no image member in the batch (members: {sorted(batch)})")

