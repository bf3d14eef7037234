"""Pooling shared by the transfer methods: VSE-infinity's GPO over a variable number of
tokens, and the grid reductions that bring a CNN stage's map to the last stage's grid."""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


def positional_encoding(length: int, dim: int, device: torch.device) -> torch.Tensor:
    pos = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    div = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    pe = torch.zeros(length, dim, device=device)
    pe[:, 0::2] = torch.sin(pos * div)
    pe[:, 1::2] = torch.cos(pos * div)
    return pe


class GPO(nn.Module):
    """Generalized pooling: each feature dimension's values are sorted over the tokens and summed
    with weights a BiGRU reads off the positions (softmax at temperature 0.1), so the pooling
    learns anything between mean and max per rank; padded tokens take no part."""

    def __init__(self, d_pe: int = 32, d_hidden: int = 32):
        super().__init__()
        self.d_pe = d_pe
        self.gru = nn.GRU(d_pe, d_hidden, batch_first=True, bidirectional=True)
        self.score = nn.Linear(d_hidden, 1, bias=False)

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        b, k, _ = feats.shape
        mask = torch.arange(k, device=feats.device)[None, :] < lengths[:, None]  # (B, K)
        pe = positional_encoding(k, self.d_pe, feats.device).expand(b, k, self.d_pe).masked_fill(~mask[..., None], 0)
        packed = nn.utils.rnn.pack_padded_sequence(pe, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, _ = self.gru(packed)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=k)
        half = out.shape[-1] // 2
        scores = self.score((out[..., :half] + out[..., half:]) / 2).masked_fill(~mask[..., None], -1e4)
        weights = torch.softmax(scores / 0.1, dim=1)
        ranked = feats.masked_fill(~mask[..., None], -1e4).sort(dim=1, descending=True)[0]
        return (ranked.masked_fill(~mask[..., None], 0) * weights).sum(1)


def tokens(grid: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, H*W, C)."""
    return grid.flatten(2).transpose(1, 2)


def guided_sum_pool(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A stage's map onto the last stage's (H, W) grid: each cell is the sum over its window of
    positions weighted by a softmax of their mean activation, so salient positions lead (design:
    parameter-free, as it runs on the frozen, graph-free features). The window is the ratio of the
    two grids, read off the shapes; grids that do not divide fall back to adaptive average pooling."""
    b, c, h, w = x.shape
    gh, gw = size
    if (h, w) == (gh, gw):
        return x
    if h % gh or w % gw:
        return F.adaptive_avg_pool2d(x, size)
    rh, rw = h // gh, w // gw
    win = x.view(b, c, gh, rh, gw, rw).permute(0, 1, 2, 4, 3, 5).reshape(b, c, gh, gw, rh * rw)
    weights = torch.softmax(win.mean(1, keepdim=True), dim=-1)
    return (win * weights).sum(-1)


def max_avg_pool(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """SHERL's reduction: max pool + average pool onto the last grid (windows from the shapes)."""
    return F.adaptive_max_pool2d(x, size) + F.adaptive_avg_pool2d(x, size)
