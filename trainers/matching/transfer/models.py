"""The transfer models' common shape, and the two baselines UniPT and SHERL are measured against.

A model embeds images and captions into one space (l2-normalised, `embed_dim`); the VSE++ loss
reads the (images, captions) cosine matrix. The baselines are VSE-infinity's heads on the last
layer of each backbone: `full-finetune` back-propagates through both backbones, `linear-probe`
keeps them frozen and graph-free and trains the heads only.
"""
from __future__ import annotations

import torch
from torch import nn

from fusionweave.trainers.matching.encoders import l2norm
from fusionweave.trainers.matching.transfer.backbones import ImageBackbone, TextBackbone, freeze
from fusionweave.trainers.matching.transfer.pooling import GPO, tokens


class TransferModel(nn.Module):
    """Backbones plus the method's trainable parts. Frozen backbones stay in eval mode (no
    dropout; BatchNorm is always in eval mode, see `ImageBackbone.train`)."""

    finetune: bool = False

    def __init__(self, text: TextBackbone, image: ImageBackbone, embed_dim: int, gpo_dim: int = 32):
        super().__init__()
        self.text_backbone, self.image_backbone = text, image
        self.embed_dim = embed_dim
        self.text_pool, self.image_pool = GPO(gpo_dim, gpo_dim), GPO(gpo_dim, gpo_dim)
        if not self.finetune:
            freeze(text)
            freeze(image)

    def train(self, mode: bool = True) -> "TransferModel":
        super().train(mode)
        if not self.finetune:
            self.text_backbone.eval()
            self.image_backbone.eval()
        return self

    def backbone_parameters(self) -> list[nn.Parameter]:
        return [*self.text_backbone.parameters(), *self.image_backbone.parameters()]

    def pool_text(self, feats: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return l2norm(self.text_pool(feats, attention_mask.sum(1)))

    def pool_image(self, feats: torch.Tensor) -> torch.Tensor:
        lengths = torch.full((feats.shape[0],), feats.shape[1], device=feats.device)
        return l2norm(self.image_pool(feats, lengths))

    def encode_text(self, ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, images: torch.Tensor, ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.encode_image(images) @ self.encode_text(ids, attention_mask).t()


class VSEInfinity(TransferModel):
    """Linear heads + GPO on the last text layer and the last CNN stage's grid."""

    def __init__(self, text: TextBackbone, image: ImageBackbone, embed_dim: int, gpo_dim: int = 32):
        super().__init__(text, image, embed_dim, gpo_dim)
        self.text_head = nn.Linear(text.dim, embed_dim)
        self.image_head = nn.Linear(image.shapes[-1][0], embed_dim)

    def encode_text(self, ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        states, _ = self.text_backbone.hidden_states(ids, attention_mask, grad=self.finetune)
        return self.pool_text(self.text_head(states[-1]), attention_mask)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        grid = self.image_backbone.stage_features(images, grad=self.finetune)[-1]
        return self.pool_image(self.image_head(tokens(grid)))


class FullFinetune(VSEInfinity):
    finetune = True


class LinearProbe(VSEInfinity):
    finetune = False
