"""The patch aligning layer learns: over a few hundred stage-1 steps (LLM frozen, stage 1's lr) on
synthetic shape images, 1 - cosine to the teacher's patch features falls from about 1 to well below
0.5, and below what the best constant prediction (the teacher's mean feature) reaches, so the image
tokens carry per-patch content through the frozen LLM."""
from __future__ import annotations

import random
from pathlib import Path

import torch

from eve_helpers import IMAGE, one_thread, shape_image, tiny_models  # noqa: F401
from fusionweave.trainers.eve.data import Encoder, collate
from fusionweave.trainers.eve.pal import cosine_loss


def test_pal_loss_falls_on_shapes(tmp_path: Path) -> None:
    from fusionweave.trainers.eve.method import EveConfig, EveMethod

    llm, teacher = tiny_models(tmp_path)
    cfg = EveConfig(llm=llm, teacher=teacher, image=IMAGE, pel={"width": 32, "heads": 4},
                    pal={"every": 1, "layers": 2, "heads": 4},
                    stage1={"data": {"shards": [tmp_path]}})  # the loader is not used here
    torch.manual_seed(0)
    method = EveMethod(cfg, 1)
    model = method.model()
    enc = Encoder(model.tokenizer, model.image_token_id, IMAGE, "plain", 128)
    rng = random.Random(0)

    def batch(n: int) -> dict:
        return collate([enc(f"k{i}", im, [{"from": "human", "value": "<image>"}, {"from": "gpt", "value": cap}])
                        for i, (im, cap) in enumerate(shape_image(rng) for _ in range(n))])

    opt = torch.optim.AdamW(method.parameters(model), lr=method.recipe.lr, weight_decay=0)
    pal = []
    for _ in range(200):
        out = model(batch(4))
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        pal.append(float(out["pal"].detach()))
    first, last = sum(pal[:5]) / 5, sum(pal[-10:]) / 10
    held_out = batch(16)
    with torch.no_grad():
        got = float(model(held_out)["pal"])
        target = torch.cat(model.teacher(held_out["pixels"], held_out["grids"], IMAGE.patch))
        constant = float(cosine_loss(target.mean(0, keepdim=True).expand_as(target), target))
    print(f"PAL loss: first 5 steps {first:.3f}, last 10 {last:.3f}, held out {got:.3f}, mean feature {constant:.3f}")
    assert first > 0.8 and last < 0.3 and got < 0.3
    assert got < constant
