"""A frozen point-cloud encoder for `train pathweave` where no transformers model reads points:
a PointNet-style tokenizer (a shared per-point MLP, max-pooled over the whole cloud and over each
of the 8 octants around the centre), saved as a folder (config.json + weights). At real scale a
ULIP-2 PointBERT takes its place through the same `points` encoder kind."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

POINTS_CONFIG, POINTS_WEIGHTS = "config.json", "points_encoder.pt"


class PointEncoder(nn.Module):
    def __init__(self, dim: int = 32, hidden: int = 64):
        super().__init__()
        self.config = {"dim": dim, "hidden": hidden}
        self.mlp = nn.Sequential(nn.Linear(3, hidden), nn.ReLU(), nn.Linear(hidden, dim))
        self.hidden_size = dim

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        """(B, P, >=3) -> (B, 9, dim): the whole cloud's max-pooled feature, then one per octant."""
        xyz = points[..., :3]
        f = self.mlp(xyz)
        octant = ((xyz > 0).long() * torch.tensor([4, 2, 1], device=xyz.device)).sum(-1)  # (B, P) in 0..7
        tokens = [f.amax(1)]
        for o in range(8):
            masked = f.masked_fill((octant != o)[..., None], float("-inf")).amax(1)
            tokens.append(torch.where(torch.isfinite(masked), masked, torch.zeros_like(masked)))
        return torch.stack(tokens, 1)

    def save(self, out: Path) -> None:
        out.mkdir(parents=True, exist_ok=True)
        (out / POINTS_CONFIG).write_text(json.dumps({"model_type": "fusionweave-points", **self.config}))
        torch.save(self.state_dict(), out / POINTS_WEIGHTS)

    @classmethod
    def load(cls, folder: Path) -> "PointEncoder":
        cfg = json.loads((folder / POINTS_CONFIG).read_text())
        m = cls(cfg["dim"], cfg["hidden"])
        m.load_state_dict(torch.load(folder / POINTS_WEIGHTS, weights_only=True))
        return m
