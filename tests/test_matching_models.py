"""Matching modules: shapes and gradients of every head, GSSF's diagonal-only case, DBL's anchor
untouched by the boosting loss, the VSE++ loss."""
from __future__ import annotations

import pytest
import torch

from fusionweave.trainers.matching.encoders import RegionEncoder, TextEncoder, Vocab, contrastive_loss, l2norm
from fusionweave.trainers.matching.heads import GSSF, RCAR, SAF, SGR, Cosine
from fusionweave.trainers.matching.model import DBL, MatchingModel


def inputs(n: int = 3, m: int = 4, d: int = 32) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    regions = l2norm(torch.randn(n, 16, d, generator=g)).requires_grad_()
    words = l2norm(torch.randn(m, 7, d, generator=g)).requires_grad_()
    return regions, words, torch.tensor([7, 5, 3, 1][:m])


@pytest.mark.parametrize("head", [Cosine(), GSSF(32, 8), SGR(32, 24), SAF(32, 24), RCAR(32, 24)],
                         ids=["cosine", "gssf", "sgr", "saf", "rcar"])
def test_heads_shapes_and_gradients(head: torch.nn.Module) -> None:
    regions, words, lengths = inputs()
    sims = head(regions, words, lengths)
    assert sims.shape == (3, 4) and torch.isfinite(sims).all()
    sims.sum().backward()
    assert regions.grad is not None and regions.grad.abs().sum() > 0
    assert words.grad[3, 1:].abs().sum() == 0  # padding words of a 1-word caption get nothing
    for p in head.parameters():
        if p.requires_grad and p.dim() > 0:
            assert p.grad is not None


def test_padding_does_not_change_a_score() -> None:
    regions, words, lengths = inputs()
    for head in (SGR(32, 24), SAF(32, 24).eval(), RCAR(32, 24)):
        a = head(regions, words, lengths)[:, 3]
        w2 = words.detach().clone()
        w2[3, 1:] = torch.randn(6, 32)  # change only the padding of caption 3
        assert torch.allclose(a, head(regions, w2, lengths)[:, 3], atol=1e-5)


def test_gssf_diagonal_only_is_a_weighted_dot_product() -> None:
    g = GSSF(32, block=0)
    with torch.no_grad():
        g.diag.copy_(torch.linspace(0.5, 2, 32))
    x, y = l2norm(torch.randn(3, 32)), l2norm(torch.randn(5, 32))
    assert torch.allclose(g.score(x, y), (x * g.diag) @ y.T, atol=1e-6)
    blocky = GSSF(32, block=8)
    assert blocky.matrix().shape == (32, 32) and torch.allclose(blocky.matrix(), torch.eye(32))  # starts as cosine
    with pytest.raises(ValueError, match="does not divide"):
        GSSF(30, block=8)


def test_dbl_anchor_gets_no_gradient_from_boosting() -> None:
    vocab = Vocab.build(["a red circle", "a blue square"])
    target = MatchingModel("vse", len(vocab), dim=16, word_dim=8)
    dbl = DBL(target, mode="joint", boost="absolute", delta=0.2)
    images = torch.randint(0, 255, (4, 3, 32, 32), dtype=torch.uint8)
    ids, lengths = vocab.encode(["a red circle", "a blue square", "a red square", "a blue circle"])
    s_t, s_a = dbl.target(images, ids, lengths), dbl.anchor(images, ids, lengths)
    dbl.boosting_loss(s_t, s_a).backward()
    assert all(p.grad is None for p in dbl.anchor.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in dbl.target.parameters())
    ema = DBL(MatchingModel("vse", len(vocab), dim=16, word_dim=8), mode="ema", momentum=0.5)
    before = [p.clone() for p in ema.anchor.parameters()]
    ema.loss(images, ids, lengths, 0.2, True).backward()
    assert all(p.grad is None for p in ema.anchor.parameters())
    with torch.no_grad():
        for p in ema.target.parameters():
            p.add_(1.0)
    ema.after_step()
    assert all(torch.allclose(a, (b + (b + 1)) / 2) for a, b in zip(ema.anchor.parameters(), before))


def test_vse_loss_hardest_and_summed() -> None:
    sims = torch.tensor([[0.9, 0.8, 0.1], [0.45, 0.5, 0.6], [0.0, 0.1, 0.7]])
    # image -> caption violations of margin 0.2: (0,1) 0.1, (1,0) 0.15, (1,2) 0.3;
    # caption -> image: caption 1 vs image 0: 0.5, caption 2 vs image 1: 0.1
    assert float(contrastive_loss(sims, 0.2, hardest=False)) == pytest.approx(0.1 + 0.15 + 0.3 + 0.5 + 0.1)
    assert float(contrastive_loss(sims, 0.2, hardest=True)) == pytest.approx(0.1 + 0.3 + 0.5 + 0.1)


def test_encoders() -> None:
    vocab = Vocab.build(["A red circle.", "a BLUE square"])
    ids, lengths = vocab.encode(["a red thing", ""])
    assert lengths.tolist() == [3, 1] and ids[0, 2].item() == 1  # unknown word; empty -> one <unk>
    words = TextEncoder(len(vocab), 16, 8)(ids, lengths)
    assert words.shape == (2, 3, 16) and torch.allclose(words[0].norm(dim=-1), torch.ones(3), atol=1e-4)
    assert RegionEncoder(16)(torch.zeros(2, 3, 32, 32, dtype=torch.uint8)).shape == (2, 16, 16)
    assert RegionEncoder(16, feat_dim=2048)(torch.randn(2, 36, 2048)).shape == (2, 36, 16)
