"""The Q-Former-style bridge: learnable queries that attend to each other (self-attention) and to
a frozen encoder's features (cross-attention every `cross_every` layers), then a projection to the
LLM's width. Every projection PathWeave adapts is an `AdaptedLinear`: self-attention Q/K/V, cross-
attention K/V, both attention-output denses, and the LLM projection."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from fusionweave.trainers.pathweave.adapters import AdaptedLinear


def adapted(d_in: int, d_out: int) -> AdaptedLinear:
    return AdaptedLinear(nn.Linear(d_in, d_out))


class Attention(nn.Module):
    def __init__(self, hidden: int, heads: int, kv_dim: int, cross: bool):
        super().__init__()
        self.heads = heads
        # BLIP-2's cross-attention query is not adapted; its keys/values read the encoder's width
        self.q = nn.Linear(hidden, hidden) if cross else adapted(hidden, hidden)
        self.k, self.v = adapted(kv_dim, hidden), adapted(kv_dim, hidden)
        self.out = adapted(hidden, hidden)
        self.norm = nn.LayerNorm(hidden)

    def forward(self, x: torch.Tensor, kv: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        b, n, h = x.shape

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, t.shape[1], self.heads, h // self.heads).transpose(1, 2)

        attn_mask = None if mask is None else mask[:, None, None, :].bool()
        o = F.scaled_dot_product_attention(split(self.q(x)), split(self.k(kv)), split(self.v(kv)), attn_mask=attn_mask)
        return self.norm(x + self.out(o.transpose(1, 2).reshape(b, n, h)))


class Layer(nn.Module):
    def __init__(self, hidden: int, heads: int, intermediate: int, enc_dim: int, cross: bool):
        super().__init__()
        self.self_attn = Attention(hidden, heads, hidden, cross=False)
        self.cross_attn = Attention(hidden, heads, enc_dim, cross=True) if cross else None
        self.ffn = nn.Sequential(nn.Linear(hidden, intermediate), nn.GELU(), nn.Linear(intermediate, hidden))
        self.norm = nn.LayerNorm(hidden)

    def forward(self, x: torch.Tensor, feats: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        x = self.self_attn(x, x)
        if self.cross_attn is not None:
            x = self.cross_attn(x, feats, mask)
        return self.norm(x + self.ffn(x))


class Bridge(nn.Module):
    def __init__(self, enc_dim: int, llm_dim: int, hidden: int, layers: int, heads: int, intermediate: int,
                 queries: int, cross_every: int):
        super().__init__()
        self.queries = nn.Parameter(torch.randn(1, queries, hidden) * 0.02)
        self.enc_norm = nn.LayerNorm(enc_dim)
        self.layers = nn.ModuleList(Layer(hidden, heads, intermediate, enc_dim, cross=i % cross_every == 0)
                                    for i in range(layers))
        self.proj = adapted(hidden, llm_dim)

    def forward(self, feats: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, N, enc_dim) encoder features -> (B, queries, llm_dim) soft prompt tokens."""
        feats = self.enc_norm(feats)
        x = self.queries.expand(feats.shape[0], -1, -1)
        for layer in self.layers:
            x = layer(x, feats, mask)
        return self.proj(x)

    def adapted(self) -> list[tuple[str, AdaptedLinear]]:
        return [(n, m) for n, m in self.named_modules() if isinstance(m, AdaptedLinear)]
