"""Tiny randomly initialised models written from configs, for demos and tests on machines with
no weights. Their outputs are deterministic functions of the input but carry no meaning."""
from __future__ import annotations

from pathlib import Path


def make_tiny_clip(out: str | Path, image_size: int = 64, dim: int = 32, seed: int = 0) -> Path:
    """A CLIP vision tower with projection, plus its image processor, saved under `out`."""
    import torch
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(seed)
    cfg = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=image_size, patch_size=16, projection_dim=dim)
    out = Path(out)
    CLIPVisionModelWithProjection(cfg).save_pretrained(out)
    CLIPImageProcessor(size={"shortest_edge": image_size},
                       crop_size={"height": image_size, "width": image_size}).save_pretrained(out)
    (out / "README.md").write_text("Tiny CLIP vision model with RANDOM weights, made by fusionweave for demos "
                                   "and tests. Its embeddings carry no meaning.\n")
    return out


TINY_MODELS = {"clip": make_tiny_clip}
