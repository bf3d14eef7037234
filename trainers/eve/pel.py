"""EVE's patch embedding layer (PEL): pixels -> image tokens in the LLM's embedding space.

Conv (kernel = stride = patch, no bias) -> 2x2 local attention pooling (the window's average
queries its 4 patches) -> a learned CLS token that attends to all of the image's pooled patches
-> a learned split token after each row -> mlp2x_gelu projector. Convolution and pooling windows
never overlap, so reading each image's own canvas out of a padded batch is exact, and the CLS
attention is masked to that canvas: an image gives the same tokens however much it is padded.
Attention scales by 1/sqrt(head_dim) (F.scaled_dot_product_attention); the original scaled by the
full width.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Attention(nn.Module):
    """Multi-head attention of a few queries over keys/values (pre-norm, no dropout)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.norm_q, self.norm_kv = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))

    def forward(self, q: torch.Tensor, kv: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        """q (N, Lq, C), kv (N, Lk, C), key_mask (N, Lk) True = attend -> (N, Lq, C)."""
        n, lq, c = q.shape
        split = lambda x: x.view(n, -1, self.heads, c // self.heads).transpose(1, 2)  # noqa: E731
        kv = self.norm_kv(kv)
        mask = None if key_mask is None else key_mask[:, None, None, :]
        out = F.scaled_dot_product_attention(split(self.q(self.norm_q(q))), split(self.k(kv)), split(self.v(kv)),
                                             attn_mask=mask)
        return self.o(out.transpose(1, 2).reshape(n, lq, c))


class PatchEmbedding(nn.Module):
    def __init__(self, patch: int, width: int, heads: int, llm_width: int):
        super().__init__()
        self.patch = patch
        self.conv = nn.Conv2d(3, width, kernel_size=patch, stride=patch, bias=False)
        self.local = Attention(width, heads)
        self.glob = Attention(width, heads)
        self.cls = nn.Parameter(torch.randn(width) * 0.02)
        self.split = nn.Parameter(torch.randn(width) * 0.02)
        self.projector = nn.Sequential(nn.Linear(width, llm_width), nn.GELU(), nn.Linear(llm_width, llm_width))

    def pooled(self, pixels: torch.Tensor, grids: torch.Tensor) -> torch.Tensor:
        """(B, h_max, w_max, C) pooled patches over the largest canvas of the batch."""
        hm, wm = (int(v) for v in grids.max(0).values)
        side = 2 * self.patch
        x = self.conv(pixels[:, :, :hm * side, :wm * side])  # (B, C, 2hm, 2wm)
        b, c = x.shape[:2]
        win = x.view(b, c, hm, 2, wm, 2).permute(0, 2, 4, 3, 5, 1).reshape(b * hm * wm, 4, c)
        out = win.mean(1, keepdim=True)
        out = out + self.local(out, win)
        return out.view(b, hm, wm, c)

    def forward(self, pixels: torch.Tensor, grids: torch.Tensor) -> list[torch.Tensor]:
        """pixels (B, 3, H, W) and grids (B, 2) -> per image (1 + h (w + 1), llm_width) tokens."""
        x = self.pooled(pixels, grids)
        b, hm, wm, c = x.shape
        rows = torch.arange(hm, device=x.device)[None, :, None] < grids[:, 0, None, None]
        cols = torch.arange(wm, device=x.device)[None, None, :] < grids[:, 1, None, None]
        valid = (rows & cols).view(b, hm * wm)
        cls = self.cls.expand(b, 1, c)
        cls = cls + self.glob(cls, x.view(b, hm * wm, c), valid)
        out = []
        for i in range(b):
            h, w = (int(v) for v in grids[i])
            body = torch.cat([x[i, :h, :w], self.split.expand(h, 1, c)], dim=1).reshape(h * (w + 1), c)
            out.append(torch.cat([cls[i], body]))
        lengths = [len(t) for t in out]
        return list(self.projector(torch.cat(out)).split(lengths))


def patch_positions(grid: tuple[int, int]) -> torch.Tensor:
    """Indices of the h x w patch tokens among an image's 1 + h (w + 1) tokens (CLS and split tokens left out)."""
    h, w = grid
    return torch.tensor([1 + r * (w + 1) + c for r in range(h) for c in range(w)], dtype=torch.long)
