"""SHERL: an anti-redundancy fusion of the early layers (graph-free), then the backbone's last
pre-trained layer, frozen but in the gradient path: its activations are the only backbone memory.

Early route: the shallow features (text: embeddings + layers 1..N-1; CNN: the stages before the
last block, reduced to the last grid by max + average pooling) are projected to `side` dims
(text LayerNorm(Linear); CNN BatchNorm(Conv1x1)). Per token, layer i's redundancy is
rho_i = sum_j ReLU(cos(f_i, f_j)) (>= 1, as cos(f_i, f_i) = 1); its weight
a_i = ReLU(w^T (f_i * g) + b) / rho_i, l1-normalised over layers; z = sum_i a_i f_i + g, with g the
last shallow feature. Gated residual: y = Up(z) + tanh(theta / 0.1) * h_{N-1}, theta = 0 at the
start (closed). Late route: y through the last pre-trained layer, then Linear + GPO.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from fusionweave.trainers.matching.transfer.backbones import BackboneError, ImageBackbone, TextBackbone
from fusionweave.trainers.matching.transfer.models import TransferModel
from fusionweave.trainers.matching.transfer.pooling import max_avg_pool, tokens


class AntiRedundancyFusion(nn.Module):
    def __init__(self, side: int, temperature: float = 0.1):
        super().__init__()
        self.attend = nn.Linear(side, 1)
        self.theta = nn.Parameter(torch.zeros(()))
        self.temperature = temperature
        self.last_redundancy: torch.Tensor | None = None  # (B, K, T) rho of the last call
        self.last_weights: torch.Tensor | None = None  # (B, K, T) a_i of the last call

    def gate(self) -> torch.Tensor:
        return torch.tanh(self.theta / self.temperature)

    @staticmethod
    def redundancy(f: torch.Tensor) -> torch.Tensor:
        """(B, K, T, D) -> (B, K, T): each layer's summed positive cosine to every layer, itself included."""
        n = F.normalize(f, dim=-1)
        cos = torch.einsum("bktd,bjtd->btkj", n, n)
        return torch.relu(cos).sum(-1).permute(0, 2, 1)

    def forward(self, layers: list[torch.Tensor]) -> torch.Tensor:
        f = torch.stack(layers, dim=1)  # (B, K, T, D)
        g = layers[-1]
        rho = self.redundancy(f)
        a = torch.relu(self.attend(f * g[:, None]).squeeze(-1)) / rho
        a = a / a.sum(1, keepdim=True).clamp(min=1e-6)
        self.last_redundancy, self.last_weights = rho.detach(), a.detach()
        return (a[..., None] * f).sum(1) + g


class SHERL(TransferModel):
    def __init__(self, text: TextBackbone, image: ImageBackbone, embed_dim: int, side_dim: int, gpo_dim: int = 32,
                 dropout: float = 0.1, temperature: float = 0.1):
        super().__init__(text, image, embed_dim, gpo_dim)
        if len(text.layers) < 2:
            raise BackboneError("sherl needs a text encoder with at least 2 layers (early route + last layer)")
        if len(image.stages[-1]) < 2:
            raise BackboneError("sherl needs a CNN whose last stage has at least 2 blocks: the last block's input "
                                "must already be on the last grid")
        n_text = len(text.layers)  # embeddings + layers 1..N-1
        self.text_down = nn.ModuleList(nn.Sequential(nn.Linear(text.dim, side_dim), nn.LayerNorm(side_dim))
                                       for _ in range(n_text))
        self.text_fusion = AntiRedundancyFusion(side_dim, temperature)
        self.text_up = nn.Sequential(nn.ReLU(), nn.Linear(side_dim, text.dim), nn.LayerNorm(text.dim),
                                     nn.Dropout(dropout))
        c_last, *grid = image.shapes[-1]
        self.grid = tuple(grid)
        shallow = [c for c, _, _ in image.shapes[:-1]] + [c_last]  # earlier stages + the last block's input
        self.image_down = nn.ModuleList(nn.Sequential(nn.Conv2d(c, side_dim, 1), nn.BatchNorm2d(side_dim))
                                        for c in shallow)
        self.image_fusion = AntiRedundancyFusion(side_dim, temperature)
        self.image_up = nn.Sequential(nn.Conv2d(side_dim, c_last, 1), nn.BatchNorm2d(c_last), nn.ReLU())
        self.text_head = nn.Linear(text.dim, embed_dim)
        self.image_head = nn.Linear(c_last, embed_dim)

    def encode_text(self, ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        bb = self.text_backbone
        last = len(bb.layers) - 1
        states, mask = bb.hidden_states(ids, attention_mask, upto=last)  # no graph
        z = self.text_fusion([down(h) for down, h in zip(self.text_down, states)])
        y = self.text_up(z) + self.text_fusion.gate() * states[-1]
        return self.pool_text(self.text_head(bb.layer(last, y, mask)), attention_mask)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        bb = self.image_backbone
        with torch.no_grad():
            feats = bb.stage_features(images, before_last_block=True)
            maps = [max_avg_pool(f, self.grid) for f in feats]
        layers = [down(m) for down, m in zip(self.image_down, maps)]
        b, d, h, w = layers[-1].shape
        z = self.image_fusion([tokens(x) for x in layers]).transpose(1, 2).reshape(b, d, h, w)
        y = self.image_up(z) + self.image_fusion.gate() * feats[-1]
        return self.pool_image(self.image_head(tokens(bb.blocks()[-1](y))))
