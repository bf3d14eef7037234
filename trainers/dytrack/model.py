"""The DyTrack network: a one-stream ViT over template and search tokens with exits.

- Template (2x the box) and search (4x the box) crops are cut into patches, embedded with their
  own learned positions and concatenated: every layer attends over both (OSTrack's one stream).
- After each layer listed in `exits` a centre head (heatmap, size, offset; OSTrack's) reads the
  search tokens. Its confidence is the heatmap's peak.
- Feature recycling: an exit's head also sees the previous exit's head features (a 1x1
  projection added to its input), so a later exit refines an earlier guess rather than starting
  over.
- At inference (`track_step`) the layers run one at a time and a frame stops at the first exit
  whose confidence reaches its threshold; the last exit always answers.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from fusionweave.trainers.dytrack.config import ModelConfig


class CentreHead(nn.Module):
    """Heatmap (1), size (2) and offset (2) maps from the search tokens' grid; returns the maps
    and its hidden features (what the next exit recycles)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        # GroupNorm, not OSTrack's BatchNorm: a batch holds pairs of one streamed window (one or two
        # sequences), so batch statistics would differ from the running ones used at inference
        self.trunk = nn.Sequential(nn.Conv2d(dim, hidden, 3, padding=1), nn.GroupNorm(8, hidden), nn.ReLU(),
                                   nn.Conv2d(hidden, hidden, 3, padding=1), nn.GroupNorm(8, hidden), nn.ReLU())
        self.heat = nn.Conv2d(hidden, 1, 1)
        self.size = nn.Conv2d(hidden, 2, 1)
        self.offset = nn.Conv2d(hidden, 2, 1)
        nn.init.constant_(self.heat.bias, -2.19)  # CenterNet's prior: sigmoid -> 0.1

    def forward(self, x: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        h = self.trunk(x)
        return {"heat": self.heat(h), "size": self.size(h).sigmoid(), "offset": self.offset(h).sigmoid()}, h


@dataclass
class ExitOutput:
    maps: dict[str, torch.Tensor]
    search: torch.Tensor  # (B, N_search, D) the layer's search tokens (distillation)
    box: torch.Tensor  # (B, 4) cx, cy, w, h in [0, 1] of the search crop
    confidence: torch.Tensor  # (B,) the heatmap's peak after the sigmoid


def decode(maps: dict[str, torch.Tensor], window: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The box at the heatmap's peak (optionally weighted by a window): centre = (cell + offset)
    / grid, size from the size map there. Returns (boxes cx,cy,w,h normalised, peak scores)."""
    heat = maps["heat"].sigmoid().flatten(1)  # (B, G*G)
    g = maps["heat"].shape[-1]
    score = heat * window.flatten()[None] if window is not None else heat
    idx = score.argmax(dim=1)
    conf = heat.gather(1, idx[:, None])[:, 0]
    iy, ix = idx // g, idx % g
    size = maps["size"].flatten(2).gather(2, idx[:, None, None].expand(-1, 2, 1))[..., 0]
    off = maps["offset"].flatten(2).gather(2, idx[:, None, None].expand(-1, 2, 1))[..., 0]
    cx = (ix.float() + off[:, 0]) / g
    cy = (iy.float() + off[:, 1]) / g
    return torch.stack([cx, cy, size[:, 0], size[:, 1]], dim=1), conf


class DyTrackNet(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        d, p = cfg.dim, cfg.patch
        self.grid_t, self.grid_s = cfg.template_size // p, cfg.search_size // p
        self.patch = nn.Conv2d(3, d, p, stride=p)
        self.pos_t = nn.Parameter(torch.randn(1, self.grid_t ** 2, d) * 0.02)
        self.pos_s = nn.Parameter(torch.randn(1, self.grid_s ** 2, d) * 0.02)
        self.blocks = nn.ModuleList(nn.TransformerEncoderLayer(d, cfg.heads, d * cfg.mlp_ratio, dropout=0.0,
                                                               activation="gelu", batch_first=True, norm_first=True)
                                    for _ in range(cfg.depth))
        self.norms = nn.ModuleList(nn.LayerNorm(d) for _ in cfg.exits)
        self.heads = nn.ModuleList(CentreHead(d, cfg.head_dim) for _ in cfg.exits)
        # exit k > 0 recycles exit k-1's head features into its own input
        self.recycle = nn.ModuleList(nn.Conv2d(cfg.head_dim, d, 1) for _ in cfg.exits[1:])
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)

    def embed(self, template: torch.Tensor, search: torch.Tensor) -> torch.Tensor:
        """uint8 or [0,1] float crops (B,3,H,W) -> the joint token sequence."""
        def tok(x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
            x = x.float() / 255.0 if x.dtype == torch.uint8 else x
            return self.patch((x - self.mean) / self.std).flatten(2).transpose(1, 2) + pos
        return torch.cat([tok(template, self.pos_t), tok(search, self.pos_s)], dim=1)

    def exit_head(self, k: int, tokens: torch.Tensor, prev: torch.Tensor | None) -> tuple[ExitOutput, torch.Tensor]:
        s = self.norms[k](tokens[:, self.grid_t ** 2:])
        grid = s.transpose(1, 2).reshape(s.shape[0], -1, self.grid_s, self.grid_s)
        if k > 0 and prev is not None and self.cfg.recycle:
            grid = grid + self.recycle[k - 1](prev)
        maps, hidden = self.heads[k](grid)
        box, conf = decode(maps)
        return ExitOutput(maps, s, box, conf), hidden

    def forward(self, template: torch.Tensor, search: torch.Tensor) -> list[ExitOutput]:
        """Every exit's output (training: all exits are supervised)."""
        x = self.embed(template, search)
        outs: list[ExitOutput] = []
        prev = None
        k = 0
        for i, blk in enumerate(self.blocks, 1):
            x = blk(x)
            if k < len(self.cfg.exits) and i == self.cfg.exits[k]:
                out, prev = self.exit_head(k, x, prev)
                outs.append(out)
                k += 1
        return outs

    @torch.no_grad()
    def track_step(self, template: torch.Tensor, search: torch.Tensor, thresholds: list[float],
                   window: torch.Tensor | None = None) -> tuple[torch.Tensor, float, int, int]:
        """One frame (batch of 1): run layers until an exit is confident. Returns (box cx,cy,w,h
        normalised to the search crop, confidence, exit index, layers run)."""
        x = self.embed(template, search)
        prev = None
        k = 0
        for i, blk in enumerate(self.blocks, 1):
            x = blk(x)
            if i != self.cfg.exits[k]:
                continue
            out, prev = self.exit_head(k, x, prev)
            box, conf = decode(out.maps, window)
            if k == len(self.cfg.exits) - 1 or float(conf[0]) >= thresholds[k]:
                return box[0], float(conf[0]), k, i
            k += 1
        raise AssertionError("the last exit always answers")  # exits end at the last layer (config check)
