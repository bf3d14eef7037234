"""The encoders the matching methods share: regions from precomputed features (SCAN's precomp:
a linear map of 36x2048 bottom-up features) or from pixels (a small CNN's grid cells, for the
synthetic CPU runs), and a BiGRU over word embeddings. Outputs are l2-normalised per region and
per word. Everything runs on CPU or GPU (the originals hard-code .cuda())."""
from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from torch import nn

_WORD = re.compile(r"[a-z0-9]+")
PAD, UNK = 0, 1


def l2norm(x: torch.Tensor, dim: int = -1, eps: float = 1e-8) -> torch.Tensor:
    return x / (x.norm(dim=dim, keepdim=True) + eps)


class Vocab:
    """Lower-case word vocabulary built from the training captions (0 = pad, 1 = unknown)."""

    def __init__(self, words: list[str]):
        self.words = ["<pad>", "<unk>", *words]
        self.index = {w: i for i, w in enumerate(self.words)}

    @classmethod
    def build(cls, captions: list[str], min_count: int = 1) -> "Vocab":
        counts: dict[str, int] = {}
        for c in captions:
            for w in _WORD.findall(c.lower()):
                counts[w] = counts.get(w, 0) + 1
        return cls(sorted(w for w, n in counts.items() if n >= min_count))

    def encode(self, captions: list[str], max_len: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
        ids = [[self.index.get(w, UNK) for w in _WORD.findall(c.lower())][:max_len] or [UNK] for c in captions]
        lengths = torch.tensor([len(x) for x in ids])
        out = torch.zeros(len(ids), int(lengths.max()), dtype=torch.long)
        for i, x in enumerate(ids):
            out[i, :len(x)] = torch.tensor(x)
        return out, lengths

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.words[2:]))

    @classmethod
    def load(cls, path: str | Path) -> "Vocab":
        return cls(json.loads(Path(path).read_text()))

    def __len__(self) -> int:
        return len(self.words)


class RegionEncoder(nn.Module):
    """(B, R, feat_dim) precomputed regions, or (B, 3, H, W) uint8 pixels -> (B, R, dim) unit vectors."""

    def __init__(self, dim: int, feat_dim: int | None = None, grid: int = 4):
        super().__init__()
        self.fc = nn.Linear(feat_dim, dim) if feat_dim else None
        self.cnn = None if feat_dim else nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(grid),
            nn.Conv2d(64, dim, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fc is not None:
            return l2norm(self.fc(x.float()))
        feats = self.cnn(x.float() / 255.0)  # (B, dim, g, g)
        return l2norm(feats.flatten(2).transpose(1, 2))


class TextEncoder(nn.Module):
    """Word embeddings through a bidirectional GRU; the two directions are averaged."""

    def __init__(self, vocab_size: int, dim: int, word_dim: int = 300, layers: int = 1):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, word_dim, padding_idx=PAD)
        self.gru = nn.GRU(word_dim, dim, layers, batch_first=True, bidirectional=True)
        self.dim = dim

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        packed = nn.utils.rnn.pack_padded_sequence(self.embed(ids), lengths.cpu(), batch_first=True,
                                                   enforce_sorted=False)
        out, _ = self.gru(packed)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=ids.shape[1])
        out = (out[..., :self.dim] + out[..., self.dim:]) / 2
        return l2norm(out)


def word_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


def mean_words(words: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    m = word_mask(lengths, words.shape[1]).unsqueeze(-1).float()
    return (words * m).sum(1) / m.sum(1).clamp(min=1)


def contrastive_loss(sims: torch.Tensor, margin: float = 0.2, hardest: bool = True) -> torch.Tensor:
    """VSE++: hinge on every negative pair of a (B, B) matrix with positives on the diagonal, in
    both directions; `hardest` keeps only the hardest negative per row and column (after the
    warm-up, where all violations are summed)."""
    pos = sims.diag()
    cost_t = (margin + sims - pos[:, None]).clamp(min=0)  # image i vs captions j
    cost_i = (margin + sims - pos[None, :]).clamp(min=0)  # caption j vs images i
    eye = torch.eye(len(sims), dtype=torch.bool, device=sims.device)
    cost_t, cost_i = cost_t.masked_fill(eye, 0), cost_i.masked_fill(eye, 0)
    if hardest:
        return cost_t.max(1)[0].sum() + cost_i.max(0)[0].sum()
    return cost_t.sum() + cost_i.sum()
