"""EVE's patch aligning layer (PAL, training only) and its frozen vision teacher.

The LLM's hidden states at the image's patch positions (CLS and split tokens left out) from layers
L, L-k, L-2k, ... are each layer-normed and projected to the teacher's width; at each patch the
last layer's projection queries the projections of all chosen layers (attention across layers,
per patch: a design choice, the sources only say "cross-attention with the last layer as query");
out = Linear(last) + Linear(attended). The loss is 1 - mean cosine against the teacher's
penultimate-layer patch features (as EVE's code; the paper says MSE).

Grid alignment (design): the teacher sees the image's canvas (the resized image plus its thin
mean-colour margin up to the 2 x patch grid) resized to its own square input, so its patch grid
spans the same area as EVE's h x w grid; its feature map is then resampled to h x w (bilinear,
antialiased: an average when shrinking). Batch padding never reaches the teacher or the loss.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from fusionweave.trainers.eve.pel import Attention


def aligned_layers(num_layers: int, every: int, count: int) -> list[int]:
    """hidden_states indices L, L-k, ..., oldest last; index 0 (the embeddings) is not a layer."""
    out = [num_layers - i * every for i in range(count)]
    if out[-1] < 1:
        raise ValueError(f"PAL wants {count} layers every {every} below layer {num_layers}, but the LLM has only "
                         f"{num_layers} layers: lower pal.layers or pal.every")
    return out


class PatchAligner(nn.Module):
    def __init__(self, llm_width: int, teacher_width: int, count: int, heads: int):
        super().__init__()
        self.norms = nn.ModuleList(nn.LayerNorm(llm_width) for _ in range(count))
        self.projs = nn.ModuleList(nn.Linear(llm_width, teacher_width) for _ in range(count))
        self.cross = Attention(teacher_width, heads)
        self.out_last, self.out_attn = nn.Linear(teacher_width, teacher_width), nn.Linear(teacher_width, teacher_width)

    def forward(self, states: list[torch.Tensor]) -> torch.Tensor:
        """states: per chosen layer (last first) (N, llm_width) at N patch positions -> (N, teacher_width)."""
        proj = torch.stack([p(n(s)) for s, n, p in zip(states, self.norms, self.projs)], dim=1)  # (N, K, D)
        last = proj[:, :1]
        attended = self.cross(last, proj)
        return (self.out_last(last) + self.out_attn(attended))[:, 0]


def cosine_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return 1 - F.cosine_similarity(pred.float(), target.float(), dim=-1).mean()


class Teacher(nn.Module):
    """A frozen transformers CLIP/SigLIP vision model read from a local folder."""

    def __init__(self, path: str | Path, pixel_mean: tuple[float, ...], pixel_std: tuple[float, ...]):
        super().__init__()
        from transformers import AutoConfig, CLIPVisionModel, SiglipVisionModel

        path = Path(path)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"teacher {path}: no config.json; give a local CLIP or SigLIP vision model folder")
        kind = AutoConfig.from_pretrained(path).model_type
        cls = SiglipVisionModel if kind.startswith("siglip") else CLIPVisionModel
        self.model = cls.from_pretrained(path).eval().requires_grad_(False)
        cfg = self.model.config
        self.size, self.patch, self.width = cfg.image_size, cfg.patch_size, cfg.hidden_size
        mean, std = _processor_norm(path, kind)
        # pixels come normalised for EVE; the teacher wants its own normalisation
        self.register_buffer("scale", (torch.tensor(pixel_std) / torch.tensor(std)).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("shift", ((torch.tensor(pixel_mean) - torch.tensor(mean)) / torch.tensor(std))
                             .view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> "Teacher":
        return super().train(False)  # always frozen

    @torch.no_grad()
    def forward(self, pixels: torch.Tensor, grids: torch.Tensor, patch: int) -> list[torch.Tensor]:
        """Per image (h * w, teacher_width) penultimate-layer patch features on EVE's grid."""
        side = 2 * patch
        crops = []
        for i, (h, w) in enumerate(grids.tolist()):
            crop = pixels[i:i + 1, :, :h * side, :w * side].float()
            crops.append(F.interpolate(crop, size=(self.size, self.size), mode="bicubic", align_corners=False))
        x = torch.cat(crops) * self.scale + self.shift
        hidden = self.model(pixel_values=x.to(self.scale.dtype), output_hidden_states=True).hidden_states[-2]
        g = self.size // self.patch
        feats = hidden[:, -g * g:].transpose(1, 2).reshape(len(crops), -1, g, g).float()  # CLS (if any) dropped
        out = []
        for i, (h, w) in enumerate(grids.tolist()):
            f = F.interpolate(feats[i:i + 1], size=(h, w), mode="bilinear", align_corners=False, antialias=True)
            out.append(f[0].flatten(1).T)
        return out


def _processor_norm(path: Path, kind: str) -> tuple[list[float], list[float]]:
    import json

    cfg = path / "preprocessor_config.json"
    if cfg.is_file():
        got = json.loads(cfg.read_text())
        if "image_mean" in got and "image_std" in got:
            return got["image_mean"], got["image_std"]
    if kind.startswith("siglip"):
        return [0.5, 0.5, 0.5], [0.5, 0.5, 0.5]
    from fusionweave.trainers.eve.image import CLIP_MEAN, CLIP_STD

    return list(CLIP_MEAN), list(CLIP_STD)
