"""UniPT: a light parallel network over every layer of frozen, graph-free backbones.

Per layer i a down-projection F_i (text: LayerNorm(Linear(h_i)); CNN: BatchNorm(Conv1x1) of the
stage's map reduced to the last grid by a guided sum-pool). The last layer F_N guides: for i < N,
M_i = (l1norm_rows(ReLU(F_N F_i^T), padding masked) + I) F_i; confidences
c_i = Linear(pool(F_N) * pool(F_i)), w = softmax(c) over layers;
out = Up(ReLU(F_N + LayerNorm(Linear(sum_i w_i M_i)))), then GPO and l2norm. Back-propagation
never enters a backbone, so training memory does not grow with its depth.
"""
from __future__ import annotations

import torch
from torch import nn

from fusionweave.trainers.matching.transfer.backbones import ImageBackbone, TextBackbone
from fusionweave.trainers.matching.transfer.models import TransferModel
from fusionweave.trainers.matching.transfer.pooling import guided_sum_pool, tokens


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask[..., None].to(x.dtype)
    return (x * m).sum(1) / m.sum(1).clamp(min=1)


class UniPTFusion(nn.Module):
    """The interaction, confidence aggregation and up-projection over projected layers (B, T, side)."""

    def __init__(self, side: int, out: int):
        super().__init__()
        self.confidence = nn.Linear(side, 1)
        self.mix = nn.Sequential(nn.Linear(side, side), nn.LayerNorm(side))
        self.up = nn.Linear(side, out)
        self.last_confidences: torch.Tensor | None = None  # (B, N) softmax weights of the last call

    def forward(self, layers: list[torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
        guide, rest = layers[-1], layers[:-1]
        pooled = masked_mean(guide, mask)
        keys = mask[:, None, :]  # padded tokens are never attended to
        mixed, conf = [], []
        for f in rest:
            att = torch.relu(guide @ f.transpose(1, 2)).masked_fill(~keys, 0)
            att = att / att.sum(-1, keepdim=True).clamp(min=1e-6)
            mixed.append(att @ f + f)
            conf.append(self.confidence(pooled * masked_mean(f, mask)))
        w = torch.softmax(torch.cat(conf, dim=1), dim=1)  # (B, N)
        self.last_confidences = w.detach()
        agg = (torch.stack(mixed, dim=1) * w[:, :, None, None]).sum(1)
        return self.up(torch.relu(guide + self.mix(agg)))


class UniPT(TransferModel):
    def __init__(self, text: TextBackbone, image: ImageBackbone, embed_dim: int, side_dim: int, gpo_dim: int = 32):
        super().__init__(text, image, embed_dim, gpo_dim)
        n_text = len(text.layers) + 1
        self.text_down = nn.ModuleList(nn.Sequential(nn.Linear(text.dim, side_dim), nn.LayerNorm(side_dim))
                                       for _ in range(n_text))
        self.image_down = nn.ModuleList(nn.Sequential(nn.Conv2d(c, side_dim, 1), nn.BatchNorm2d(side_dim))
                                        for c, _, _ in image.shapes)
        self.grid = image.shapes[-1][1:]
        self.text_fusion = UniPTFusion(side_dim, embed_dim)
        self.image_fusion = UniPTFusion(side_dim, embed_dim)

    def encode_text(self, ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        states, _ = self.text_backbone.hidden_states(ids, attention_mask)
        layers = [down(h) for down, h in zip(self.text_down, states)]
        return self.pool_text(self.text_fusion(layers, attention_mask.bool()), attention_mask)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            maps = [guided_sum_pool(f, self.grid) for f in self.image_backbone.stage_features(images)]
        layers = [tokens(down(m)) for down, m in zip(self.image_down, maps)]
        mask = torch.ones(layers[0].shape[:2], dtype=torch.bool, device=layers[0].device)
        return self.pool_image(self.image_fusion(layers, mask))
