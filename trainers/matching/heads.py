"""Similarity heads of the matching methods. Each maps regions (n, R, d), words (m, L, d) and
caption lengths (m,) to a similarity matrix (n images, m captions).

- `Cosine`: the global embeddings' cosine (VSE).
- `GSSF`: x^T (W o U) y with W o U = a learned diagonal plus learned block-diagonal channel
  blocks, a drop-in replacement for cosine.
- `SGR` / `SAF` (SGRAF): similarity vectors s_j = l2norm(W (a_j - t_j)^2) between each word and
  its text-to-image attended region mix (lambda 9), plus a global one; SGR reasons over the
  [global; locals] graph for 3 steps and reads the global node; SAF filters with
  l1norm(sigmoid(BN(w s_i))) and sums. Score sigmoid(w s). SGRAF averages the two models' matrices.
- `RCAR`: K steps of regulated alignment: RCR updates a per-word attention temperature and a
  modulation of the query from the alignment vectors; RAR re-weights the alignments by attention
  against the current aggregate. The t2i and i2t variants are averaged.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from fusionweave.trainers.matching.encoders import l2norm, mean_words, word_mask


class Cosine(nn.Module):
    def forward(self, regions: torch.Tensor, words: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return l2norm(regions.mean(1)) @ l2norm(mean_words(words, lengths)).T


class GSSF(nn.Module):
    """Generalised structural similarity on global embeddings: a diagonal term plus
    block-diagonal channel interactions (block size `block`; 0 keeps the diagonal only)."""

    def __init__(self, dim: int, block: int = 16):
        super().__init__()
        if block and dim % block:
            raise ValueError(f"GSSF block size {block} does not divide the embedding size {dim}")
        self.diag = nn.Parameter(torch.ones(dim))
        self.block = block
        self.blocks = nn.Parameter(torch.zeros(dim // block, block, block)) if block else None

    def matrix(self) -> torch.Tensor:
        a = torch.diag(self.diag)
        if self.blocks is not None:
            a = a + torch.block_diag(*self.blocks)
        return a

    def score(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return x @ self.matrix() @ y.T

    def forward(self, regions: torch.Tensor, words: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.score(l2norm(regions.mean(1)), l2norm(mean_words(words, lengths)))


def attend(query: torch.Tensor, keys: torch.Tensor, lam: float | torch.Tensor,
           key_mask: torch.Tensor | None = None, query_mask: torch.Tensor | None = None) -> torch.Tensor:
    """SCAN-style attention of each query vector over keys, for every (key set, query set) pair.
    query (m, L, d) or per pair (n, m, L, d), keys (n, R, d) -> (n, m, L, d). `lam` a scalar or
    (n, m, L) temperatures."""
    cos = torch.einsum("nmld,nrd->nmlr" if query.dim() == 4 else "mld,nrd->nmlr", query, keys)
    if query_mask is not None:  # (m, L): padding must not enter the normalisation over positions
        cos = cos.masked_fill(~query_mask[None, :, :, None], 0.0)
    att = l2norm(F.leaky_relu(cos, 0.1), dim=2)  # normalised over the query's positions, as SCAN
    lam_t = torch.as_tensor(lam, dtype=att.dtype, device=att.device)
    logits = att * (lam_t.unsqueeze(-1) if lam_t.dim() else lam_t)
    if key_mask is not None:  # (n, R): padded keys never attended
        logits = logits.masked_fill(~key_mask[:, None, None, :], float("-inf"))
    return torch.einsum("nmlr,nrd->nmld", torch.softmax(logits, dim=-1), keys)


class SimVector(nn.Module):
    """s = l2norm(W (a - t)^2): how a query vector and its attended mix differ, per channel."""

    def __init__(self, dim: int, sim_dim: int):
        super().__init__()
        self.w = nn.Linear(dim, sim_dim)

    def forward(self, attended: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        return l2norm(self.w((attended - query) ** 2))


class _Alignments(nn.Module):
    """The [global; per-word local] similarity vectors of SGRAF, for every pair: (n, m, 1+L, S)."""

    def __init__(self, dim: int, sim_dim: int, lam: float):
        super().__init__()
        self.local, self.glob = SimVector(dim, sim_dim), SimVector(dim, sim_dim)
        self.att_w = nn.Linear(dim, dim)
        self.lam = lam

    def forward(self, regions: torch.Tensor, words: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n, m = regions.shape[0], words.shape[0]
        wmask = word_mask(lengths, words.shape[1])
        locals_ = self.local(attend(words, regions, self.lam, query_mask=wmask), words.unsqueeze(0))  # (n, m, L, S)
        img_g = regions.mean(1)  # (n, d)
        txt_g = mean_words(words, lengths)  # (m, d)
        # the global image vector attends over regions with the global text as query
        w = torch.softmax(torch.einsum("nrd,md->nmr", self.att_w(regions), txt_g), dim=-1)
        img_att = l2norm(torch.einsum("nmr,nrd->nmd", w, regions) + img_g[:, None, :])
        glob = self.glob(img_att, txt_g[None, :, :].expand(n, m, -1))  # (n, m, S)
        nodes = torch.cat([glob.unsqueeze(2), locals_], dim=2)
        mask = torch.cat([torch.ones(m, 1, dtype=torch.bool, device=words.device), wmask], dim=1)  # (m, 1+L)
        return nodes, mask


class SGR(nn.Module):
    def __init__(self, dim: int, sim_dim: int = 256, steps: int = 3, lam: float = 9.0):
        super().__init__()
        self.align = _Alignments(dim, sim_dim, lam)
        self.q = nn.ModuleList(nn.Linear(sim_dim, sim_dim) for _ in range(steps))
        self.k = nn.ModuleList(nn.Linear(sim_dim, sim_dim) for _ in range(steps))
        self.g = nn.ModuleList(nn.Linear(sim_dim, sim_dim) for _ in range(steps))
        self.eval_w = nn.Linear(sim_dim, 1)

    def forward(self, regions: torch.Tensor, words: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        s, mask = self.align(regions, words, lengths)
        pad = ~mask[None, :, None, :]  # (1, m, 1, 1+L)
        for q, k, g in zip(self.q, self.k, self.g):
            edges = torch.softmax((q(s) @ k(s).transpose(-1, -2)).masked_fill(pad, float("-inf")), dim=-1)
            s = F.relu(g(edges @ s))
        return torch.sigmoid(self.eval_w(s[:, :, 0])).squeeze(-1)


class SAF(nn.Module):
    def __init__(self, dim: int, sim_dim: int = 256, lam: float = 9.0):
        super().__init__()
        self.align = _Alignments(dim, sim_dim, lam)
        self.w = nn.Linear(sim_dim, 1)
        self.bn = nn.BatchNorm1d(1)
        self.eval_w = nn.Linear(sim_dim, 1)

    def forward(self, regions: torch.Tensor, words: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        s, mask = self.align(regions, words, lengths)
        n, m, k, _ = s.shape
        raw = self.w(s).squeeze(-1)  # (n, m, k)
        valid = mask[None].expand(n, m, k)
        gate = torch.zeros_like(raw)
        # batch statistics over real nodes only: padding must not move them
        gate = gate.masked_scatter(valid, torch.sigmoid(self.bn(raw[valid].unsqueeze(1))).squeeze(1))
        gate = gate / gate.sum(-1, keepdim=True).clamp(min=1e-8)  # l1norm over the nodes
        agg = l2norm((gate.unsqueeze(-1) * s).sum(2))
        return torch.sigmoid(self.eval_w(agg)).squeeze(-1)


class RCAR(nn.Module):
    """Regulated alignment in both directions (t2i: words attend over regions; i2t: regions over
    words), K steps each, scores averaged."""

    def __init__(self, dim: int, sim_dim: int = 256, steps: int = 2, lam: float = 9.0):
        super().__init__()
        self.steps, self.lam = steps, lam
        self.sim = nn.ModuleList(SimVector(dim, sim_dim) for _ in range(2))
        self.temp = nn.ModuleList(nn.Linear(sim_dim, 1) for _ in range(2))  # RCR: per-query temperature
        self.mod = nn.ModuleList(nn.Linear(sim_dim, dim) for _ in range(2))  # RCR: query modulation
        self.rar = nn.ModuleList(nn.Linear(sim_dim, sim_dim) for _ in range(2))  # RAR: re-weighting
        self.eval_w = nn.ModuleList(nn.Linear(sim_dim, 1) for _ in range(2))

    def _direction(self, d: int, query: torch.Tensor, q_mask: torch.Tensor, keys: torch.Tensor,
                   k_mask: torch.Tensor | None) -> torch.Tensor:
        """query (m, L, dim) with mask (m, L) against key sets (n, R, dim) -> scores (n, m)."""
        q = query.unsqueeze(0)
        lam: torch.Tensor | float = self.lam
        agg = None
        valid = q_mask[None, :, :, None]
        for _ in range(self.steps):
            s = self.sim[d](attend(q, keys, lam, k_mask, q_mask), q)  # (n, m, L, S) alignment vectors
            # RAR: re-weight the alignments by attention against the current aggregate
            ref = (s * valid).sum(2) / q_mask.sum(1)[None, :, None].clamp(min=1) if agg is None else agg
            w = (self.rar[d](s) * ref.unsqueeze(2)).sum(-1).masked_fill(~q_mask[None], float("-inf"))
            agg = l2norm((torch.softmax(w, dim=-1).unsqueeze(-1) * s).sum(2))
            # RCR: the next step's per-query temperature and query modulation, from the alignments
            lam = self.lam * 2 * torch.sigmoid(self.temp[d](s)).squeeze(-1)
            q = l2norm(query.unsqueeze(0) * (1 + torch.tanh(self.mod[d](s))))
        return torch.sigmoid(self.eval_w[d](agg)).squeeze(-1)

    def forward(self, regions: torch.Tensor, words: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        wmask = word_mask(lengths, words.shape[1])
        rmask = torch.ones(regions.shape[:2], dtype=torch.bool, device=regions.device)
        t2i = self._direction(0, words, wmask, regions, None)  # (n images, m captions)
        i2t = self._direction(1, regions, rmask, words, wmask).T  # computed (m, n)
        return (t2i + i2t) / 2
