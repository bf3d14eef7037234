"""The EVE model: token counts per aspect ratio, padding invariance, one image per sample, the
stage-1 trainable set, and a save/load round trip that keeps logits and generates."""
from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from eve_helpers import IMAGE, build, llava_rows, noise, one_thread, shape_image, tiny_models, write_json  # noqa: F401
from fusionweave.trainers.eve.data import Encoder, collate
from fusionweave.trainers.eve.image import num_tokens, pad_batch, preprocess


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return tiny_models(tmp_path_factory.mktemp("eve-models"))


@pytest.fixture(scope="module")
def model(models):
    torch.manual_seed(0)
    return build(*models).eval()


def batch_of(model, images, captions=None) -> dict:
    enc = Encoder(model.tokenizer, model.image_token_id, IMAGE, "plain", 256)
    captions = captions or ["a red square"] * len(images)
    return collate([enc(f"s{i}", im, [{"from": "human", "value": "<image>"}, {"from": "gpt", "value": c}])
                    for i, (im, c) in enumerate(zip(images, captions))])


@pytest.mark.parametrize("hw,grid,tokens", [((672, 672), (24, 24), 601), ((1000, 500), (24, 12), 313),
                                            ((300, 1000), (8, 24), 201), ((50, 49), (24, 24), 601),
                                            ((10, 1000), (1, 24), 26)])
def test_token_count_per_aspect_ratio(hw, grid, tokens) -> None:
    im = preprocess(noise(*hw), 672, 14)
    assert im.grid == grid and num_tokens(im.grid) == tokens == 1 + grid[0] * (grid[1] + 1)
    assert im.pixels.shape == (3, 28 * grid[0], 28 * grid[1])
    assert im.valid[0] <= im.pixels.shape[1] < im.valid[0] + 28 and max(im.valid) == 672


def test_pel_gives_one_cls_and_a_split_token_per_row(model) -> None:
    ims = [preprocess(noise(h, w, i), IMAGE.max_side, IMAGE.patch) for i, (h, w) in
           enumerate([(32, 32), (40, 10), (9, 30), (33, 20)])]
    pixels, grids = pad_batch(ims)
    with torch.no_grad():
        out = model.pel(pixels, grids)
    assert [len(t) for t in out] == [num_tokens(i.grid) for i in ims] == [21, 9, 11, 17]
    assert all(t.shape[1] == model.llm.config.hidden_size for t in out)
    h, w = ims[0].grid  # the split token is one learned vector: equal after each row
    rows = out[0][1:].view(h, w + 1, -1)
    assert torch.allclose(rows[0, -1], rows[-1, -1])


def test_same_image_padded_differently_gives_the_same_tokens(model) -> None:
    a = preprocess(noise(30, 12, 1), IMAGE.max_side, IMAGE.patch)
    big = preprocess(noise(32, 32, 2), IMAGE.max_side, IMAGE.patch)
    with torch.no_grad():
        alone = model.pel(*pad_batch([a]))[0]
        batched = model.pel(*pad_batch([big, a]))[1]
        # padding with garbage beyond the image's canvas changes nothing either
        px, grids = pad_batch([a])
        wide = torch.randn(1, 3, 48, 48)
        wide[:, :, :px.shape[2], :px.shape[3]] = px
        garbage = model.pel(wide, grids)[0]
    assert torch.allclose(alone, batched, atol=1e-5) and torch.allclose(alone, garbage, atol=1e-5)
    # and the language model sees the same logits for that sample
    with torch.no_grad():
        one = batch_of(model, [noise(30, 12, 1)])
        two = batch_of(model, [noise(32, 32, 2), noise(30, 12, 1)])
        e1, m1, _, _ = model.splice(one)
        e2, m2, _, _ = model.splice(two)
        l1 = model.llm(inputs_embeds=e1, attention_mask=m1).logits[0, :m1[0].sum()]
        l2 = model.llm(inputs_embeds=e2, attention_mask=m2).logits[1, :m2[1].sum()]
    assert torch.allclose(l1, l2, atol=1e-4)


def test_spliced_batch_pads_sequences_of_different_image_sizes(model) -> None:
    b = batch_of(model, [noise(32, 32), noise(8, 32)], ["a red square", "a blue circle near the tree"])
    embeds, mask, labels, where = model.splice(b)
    lengths = [len(ids) - 1 + num_tokens(tuple(g.tolist())) for ids, g in zip(b["input_ids"], b["grids"])]
    assert mask.sum(1).tolist() == lengths and embeds.shape[1] == max(lengths)
    for i, ids in enumerate(b["input_ids"]):
        p = int((ids == model.image_token_id).nonzero())
        n = num_tokens(tuple(b["grids"][i].tolist()))
        assert (labels[i, p:p + n] == -100).all() and (labels[i, lengths[i]:] == -100).all()
        assert labels[i, p + n:lengths[i]].tolist() == b["labels"][i][p + 1:].tolist()
        assert len(where[i]) == b["grids"][i].prod() and where[i].min() == p + 1


def test_several_images_in_one_sample_is_a_clear_error(model) -> None:
    b = batch_of(model, [noise(16, 16)])
    ids = b["input_ids"][0]
    b["input_ids"][0] = torch.cat([ids, ids[1:2]])  # a second <image>
    b["labels"][0] = torch.cat([b["labels"][0], b["labels"][0][:1]])
    with pytest.raises(ValueError, match="sample s0: 2 <image> tokens"):
        model(b)


def test_stage1_trains_only_pel_projector_and_pal(models, tmp_path: Path) -> None:
    from fusionweave.trainers.core.method import StepContext
    from fusionweave.trainers.eve.method import EveConfig, EveMethod

    rows = write_json(tmp_path / "pre.json", llava_rows(tmp_path, 4))
    cfg = EveConfig(llm=models[0], teacher=models[1], image=IMAGE, pel={"width": 32, "heads": 4},
                    pal={"every": 1, "layers": 2, "heads": 4},
                    stage1={"data": {"conversations": [{"path": rows, "image_root": tmp_path}], "batch_size": 2,
                                     "workers": 0}})
    method = EveMethod(cfg, 1)
    assert method.recipe.lr == 4e-4 and method.recipe.warmup_ratio == 0.03 and method.recipe.weight_decay == 0
    m = method.model()
    batch = next(iter(method.loader(0, 1)))
    loss, logs = method.loss(m, batch, StepContext(0, 0, torch.device("cpu"), 0, 1))
    loss.backward()
    assert logs["pal"] > 0 and logs["ce"] > 0
    assert all(p.grad is None for p in m.llm.parameters())
    for part in (m.pel.conv, m.pel.local, m.pel.glob, m.pel.projector, m.pal):
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in part.parameters())
    assert m.pel.cls.grad is not None and m.pel.split.grad is not None
    assert {id(p) for p in method.parameters(m)} == {id(p) for p in [*m.pel.parameters(), *m.pal.parameters()]}
    assert all(not p.requires_grad for p in m.teacher.parameters())
    assert not any(k.startswith("teacher") for k in m.state_dict())  # the frozen teacher is never saved


def test_save_and_load_keep_logits_and_generate(model, models, tmp_path: Path) -> None:
    from fusionweave.trainers.eve.model import EveModel

    rng = random.Random(3)
    b = batch_of(model, [shape_image(rng)[0], shape_image(rng)[0]])
    folder = model.save_pretrained(tmp_path / "eve")
    assert sorted(p.name for p in folder.iterdir()) == ["eve.safetensors", "eve_config.json", "llm"]
    loaded = EveModel.from_pretrained(folder).eval()
    assert loaded.teacher is None
    with torch.no_grad():
        e1, m1, _, _ = model.splice(b)
        e2, m2, _, _ = loaded.splice(b)
        assert torch.equal(model.llm(inputs_embeds=e1, attention_mask=m1).logits,
                           loaded.llm(inputs_embeds=e2, attention_mask=m2).logits)
        assert torch.equal(model(b)["ce"], loaded(b)["ce"])
    image = shape_image(rng)[0]
    text = loaded.generate(image, max_new_tokens=4)
    assert text == model.generate(image, max_new_tokens=4) and 0 < len(text.split()) <= 4


def test_missing_llm_folder_is_a_clear_error(tmp_path: Path, models) -> None:
    from fusionweave.trainers.eve.model import EveModel

    with pytest.raises(FileNotFoundError, match="never downloaded"):
        EveModel.build(tmp_path / "nope", models[1], IMAGE)
    with pytest.raises(FileNotFoundError, match="not a saved EVE model folder"):
        EveModel.from_pretrained(tmp_path)


@pytest.mark.parametrize("kind", ["clip", "siglip"])
def test_teacher_features_on_the_eve_grid(tmp_path: Path, models, kind: str) -> None:
    from fusionweave.trainers.eve.pal import Teacher

    if kind == "siglip":
        from transformers import SiglipVisionConfig, SiglipVisionModel

        path = tmp_path / "siglip"
        SiglipVisionModel(SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                             num_attention_heads=2, image_size=32, patch_size=4)).save_pretrained(path)
    else:
        path = models[1]
    t = Teacher(path, IMAGE.mean, IMAGE.std)
    ims = [preprocess(noise(h, w, i), IMAGE.max_side, IMAGE.patch) for i, (h, w) in enumerate([(32, 12), (20, 32)])]
    pixels, grids = pad_batch(ims)
    feats = t(pixels, grids, IMAGE.patch)
    assert [f.shape for f in feats] == [(g[0] * g[1], 32) for g in (i.grid for i in ims)]
    assert torch.allclose(t(*pad_batch(ims[:1]), IMAGE.patch)[0], feats[0], atol=1e-5)  # batch padding never reaches it
    if kind == "siglip":  # SigLIP's own normalisation (0.5, 0.5): the mean colour maps to (0.48 - 0.5) / 0.5
        assert torch.allclose(t.shift.flatten(), (torch.tensor(IMAGE.mean) - 0.5) / 0.5)
    with pytest.raises(FileNotFoundError, match="CLIP or SigLIP"):
        Teacher(tmp_path / "none", IMAGE.mean, IMAGE.std)
