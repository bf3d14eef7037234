"""PathWeave's adapters, attached in parallel to a frozen linear layer W:

    y = W x + sum_i g_i(x) * s_i U_i(F_i(D_i x)) + g_t(x) * s_t U_t(D_t x)

- `Adapter` (uni-modal): s * U(D x), bottleneck 8, D kaiming, U zero (so a new adapter changes
  nothing at first), s a learnable scalar (1 at start), no activation.
- `InAdapter` (Adapter-in-Adapter): F inside a frozen earlier adapter's bottleneck. F(h) = h + W h
  with W zero: the frozen expert is reproduced exactly at the start (design: the reference gives
  F as Linear(8 -> 8); the residual form keeps the zero-initialisation promise of the method).
- `NoisyGate`: per-token softmax(x W_g + eps * (softplus(x W_n) + 0.01)), eps ~ N(0, 1) only while
  `module.training` (the original keyed the noise to a config flag); W_g, W_n zero: uniform at start.

`AdaptedLinear` holds every modality's path: `routes[path]` lists the experts it mixes (the
current modality's adapter last). In-adapters and gates belong to a path (the paper's per-stage
form), so a later stage never changes how an earlier modality is computed.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


class Adapter(nn.Module):
    def __init__(self, d_in: int, d_out: int, bottleneck: int):
        super().__init__()
        self.down = nn.Linear(d_in, bottleneck, bias=False)
        self.up = nn.Linear(bottleneck, d_out, bias=False)
        self.scale = nn.Parameter(torch.ones(()))
        nn.init.kaiming_uniform_(self.down.weight, a=math.sqrt(5))
        nn.init.zeros_(self.up.weight)

    def forward(self, x: torch.Tensor, inner: nn.Module | None = None) -> torch.Tensor:
        h = self.down(x)
        return self.scale * self.up(inner(h) if inner is not None else h)


class InAdapter(nn.Module):
    def __init__(self, bottleneck: int):
        super().__init__()
        self.lin = nn.Linear(bottleneck, bottleneck, bias=False)
        nn.init.zeros_(self.lin.weight)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.lin(h)


class NoisyGate(nn.Module):
    def __init__(self, d_in: int, experts: int):
        super().__init__()
        self.w_gate = nn.Linear(d_in, experts, bias=False)
        self.w_noise = nn.Linear(d_in, experts, bias=False)
        nn.init.zeros_(self.w_gate.weight)
        nn.init.zeros_(self.w_noise.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.w_gate(x)
        if self.training:
            logits = logits + torch.randn_like(logits) * (F.softplus(self.w_noise(x)) + 0.01)
        return logits.softmax(-1)


class AdaptedLinear(nn.Module):
    """A frozen-able base linear plus the experts of every path. `path` is set per forward by the
    model (`set_path`): batches hold one modality each."""

    def __init__(self, base: nn.Linear):
        super().__init__()
        self.base = base
        self.experts = nn.ModuleDict()
        self.inner = nn.ModuleDict()  # "<path>__<expert>": the path's in-adapter for an earlier expert
        self.gates = nn.ModuleDict()  # "<path>": the path's gate over its experts
        self.routes: dict[str, list[str]] = {}
        self.path: str | None = None

    def add_expert(self, name: str, bottleneck: int) -> None:
        if name not in self.experts:
            self.experts[name] = Adapter(self.base.in_features, self.base.out_features, bottleneck)

    def add_route(self, path: str, experts: list[str], bottleneck: int, gated: bool) -> None:
        """`path` mixes `experts` (the last one is the path's own adapter; earlier ones get an
        in-adapter of this path) through a gate of its own when `gated`."""
        self.routes[path] = list(experts)
        for e in experts:
            self.add_expert(e, bottleneck)
        if gated and len(experts) > 1:
            for e in experts[:-1]:
                self.inner[f"{path}__{e}"] = InAdapter(bottleneck)
            self.gates[path] = NoisyGate(self.base.in_features, len(experts))

    def gate_weights(self, x: torch.Tensor, path: str) -> torch.Tensor | None:
        return self.gates[path](x) if path in self.gates else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        names = self.routes.get(self.path or "", [])
        if not names:
            return y
        g = self.gate_weights(x, self.path)  # type: ignore[arg-type]
        for i, e in enumerate(names):
            inner = self.inner[f"{self.path}__{e}"] if f"{self.path}__{e}" in self.inner else None
            out = self.experts[e](x, inner)
            y = y + (out if g is None else g[..., i:i + 1] * out)
        return y
