"""A matching model: region encoder + BiGRU text encoder + a similarity head; and DBL's two
branches. Similarities of large sets are computed in blocks, so evaluation memory stays bounded."""
from __future__ import annotations

import copy
from typing import Literal

import torch
from torch import nn

from fusionweave.trainers.matching.encoders import RegionEncoder, TextEncoder, contrastive_loss
from fusionweave.trainers.matching.heads import GSSF, RCAR, SAF, SGR, Cosine

HEADS = {"vse": Cosine, "gssf": GSSF, "sgr": SGR, "saf": SAF, "rcar": RCAR}


def make_head(name: str, dim: int, sim_dim: int, block: int) -> nn.Module:
    if name == "gssf":
        return GSSF(dim, block)
    if name in ("sgr", "saf", "rcar"):
        return HEADS[name](dim, sim_dim)
    if name == "vse":
        return Cosine()
    raise ValueError(f"unknown head {name!r}; choose from {sorted(HEADS)}")


class MatchingModel(nn.Module):
    def __init__(self, head: str, vocab_size: int, dim: int = 256, feat_dim: int | None = None,
                 sim_dim: int = 256, block: int = 16, word_dim: int = 300):
        super().__init__()
        self.image = RegionEncoder(dim, feat_dim)
        self.text = TextEncoder(vocab_size, dim, word_dim)
        self.head = make_head(head, dim, sim_dim, block)

    def encode(self, images: torch.Tensor, ids: torch.Tensor,
               lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.image(images), self.text(ids, lengths)

    def forward(self, images: torch.Tensor, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        regions, words = self.encode(images, ids, lengths)
        return self.head(regions, words, lengths)

    @torch.no_grad()
    def sims(self, regions: torch.Tensor, words: torch.Tensor, lengths: torch.Tensor,
             block: int = 128) -> torch.Tensor:
        """(images, captions) similarities of encoded sets, block by block."""
        rows = []
        for i in range(0, len(regions), block):
            rows.append(torch.cat([self.head(regions[i:i + block], words[j:j + block], lengths[j:j + block])
                                   for j in range(0, len(words), block)], dim=1))
        return torch.cat(rows)


Anchor = Literal["joint", "ema", "frozen"]


class DBL(nn.Module):
    """Dual boosting: a target branch trained with VSE++ plus a boosting loss against the anchor
    branch's detached similarities. `absolute`: the target's positive beats the anchor's positive
    by `delta` and its negatives stay `delta` under the anchor's; `relative`: the target's
    positive-negative gap beats the anchor's by `delta`. The anchor is trained jointly (its own
    VSE++ loss), an EMA of the target, or a frozen earlier model."""

    def __init__(self, target: MatchingModel, anchor: MatchingModel | None = None, mode: Anchor = "joint",
                 boost: Literal["absolute", "relative"] = "relative", delta: float = 0.1, weight: float = 1.0,
                 momentum: float = 0.9995):
        super().__init__()
        self.target = target
        self.anchor = anchor if anchor is not None else copy.deepcopy(target)
        self.mode, self.boost, self.delta, self.weight, self.momentum = mode, boost, delta, weight, momentum
        if mode in ("ema", "frozen"):
            for p in self.anchor.parameters():
                p.requires_grad_(False)

    def forward(self, images: torch.Tensor, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.target(images, ids, lengths)

    def boosting_loss(self, s_t: torch.Tensor, s_a: torch.Tensor) -> torch.Tensor:
        s_a = s_a.detach()  # the anchor only sets the bar
        eye = torch.eye(len(s_t), dtype=torch.bool, device=s_t.device)
        pos_t, pos_a = s_t.diag(), s_a.diag()
        if self.boost == "absolute":
            pos = (self.delta + pos_a - pos_t).clamp(min=0).sum()
            neg = (self.delta + s_t - s_a).clamp(min=0).masked_fill(eye, 0).sum() / (len(s_t) - 1 or 1)
            return pos + neg
        gap_t = pos_t[:, None] - s_t
        gap_a = pos_a[:, None] - s_a
        return (self.delta + gap_a - gap_t).clamp(min=0).masked_fill(eye, 0).sum() / (len(s_t) - 1 or 1)

    def loss(self, images: torch.Tensor, ids: torch.Tensor, lengths: torch.Tensor, margin: float,
             hardest: bool) -> torch.Tensor:
        s_t = self.target(images, ids, lengths)
        if self.mode == "joint":
            s_a = self.anchor(images, ids, lengths)
            anchor_loss = contrastive_loss(s_a, margin, hardest)
        else:
            with torch.no_grad():
                s_a = self.anchor(images, ids, lengths)
            anchor_loss = s_t.new_zeros(())
        return contrastive_loss(s_t, margin, hardest) + self.weight * self.boosting_loss(s_t, s_a) + anchor_loss

    @torch.no_grad()
    def after_step(self) -> None:
        if self.mode == "ema":
            for pa, pt in zip(self.anchor.parameters(), self.target.parameters()):
                pa.mul_(self.momentum).add_(pt.detach(), alpha=1 - self.momentum)
