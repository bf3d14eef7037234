"""UniPT, SHERL and their baselines on tiny random backbones: what runs without a graph, what the
side networks compute (confidences, gate, redundancy), the memory each saves for backward, and
clear errors for backbones or configs that cannot work. Fast: no training loop."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fusionweave.experts.tiny_models import make_tiny_bert, make_tiny_resnet
from fusionweave.trainers.matching.encoders import contrastive_loss
from fusionweave.trainers.matching.transfer.backbones import BackboneError, ImageBackbone, ImageBackboneConfig
from fusionweave.trainers.matching.transfer.memory import OptimizerStateMeter, SavedTensorMeter, saved_bytes
from fusionweave.trainers.matching.transfer.method import TransferConfig, build
from fusionweave.trainers.matching.transfer.pooling import guided_sum_pool
from fusionweave.trainers.matching.transfer.sherl import SHERL
from fusionweave.trainers.matching.transfer.unipt import UniPT

CAPTIONS = ["a red circle in the top left", "there is a blue square at the bottom right and a green triangle in the top"]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("backbones")
    return make_tiny_bert(root / "bert"), make_tiny_resnet(root / "resnet")


def config(models: tuple[Path, Path], **extra: object) -> TransferConfig:
    return TransferConfig.model_validate({"train": "x", "test": "x", "text": {"model": str(models[0])},
                                          "image": {"model": str(models[1]), "image_size": 64},
                                          "embed_dim": 32, "side_dim": 32, **extra})


def batch(net: torch.nn.Module, n: int = 8) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    ids, mask = net.text_backbone.tokenize([CAPTIONS[i % 2] for i in range(n)])
    return torch.randint(0, 256, (n, 3, 64, 64), dtype=torch.uint8, generator=g), ids, mask


def step(net: torch.nn.Module) -> int:
    """One training forward and backward; the bytes the forward saved for backward."""
    net.train()
    images, ids, mask = batch(net)
    with SavedTensorMeter(list(net.parameters())) as meter:
        loss = contrastive_loss(net(images, ids, mask), 0.2, hardest=False)
    loss.backward()
    return meter.bytes


def test_tiny_bert_reads_the_caption_words(models: tuple[Path, Path]) -> None:
    net = build("linear-probe", config(models))
    ids, mask = net.text_backbone.tokenize(CAPTIONS)
    tok = net.text_backbone.tokenizer
    assert tok.unk_token_id not in ids[mask.bool()].tolist()
    assert mask.sum(1).tolist() == [len(c.split()) + 2 for c in CAPTIONS]  # [CLS] words [SEP]


@pytest.mark.parametrize("method", ["unipt", "sherl", "linear-probe", "full-finetune"])
def test_backbones_get_gradients_only_in_full_finetuning(models: tuple[Path, Path], method: str) -> None:
    torch.manual_seed(0)
    net = build(method, config(models))
    before = {k: v.clone() for k, v in net.image_backbone.state_dict().items() if "running" in k}
    step(net)
    with_grad = [p for p in net.backbone_parameters() if p.grad is not None]
    side = [p for n, p in net.named_parameters() if "backbone" not in n]
    assert all(p.grad is not None for p in side if p.requires_grad), method
    if method == "full-finetune":
        assert len(with_grad) > 0.8 * len(list(net.backbone_parameters()))
    else:
        assert with_grad == [] and not any(p.requires_grad for p in net.backbone_parameters())
    bns = [m for m in net.image_backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and not any(m.training for m in bns)  # backbone BatchNorm stays in eval mode while training
    after = net.image_backbone.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # running statistics untouched


def test_unipt_confidences_sum_to_one_and_cover_every_layer(models: tuple[Path, Path]) -> None:
    net = build("unipt", config(models))
    assert isinstance(net, UniPT)
    step(net)
    text, image = net.text_fusion.last_confidences, net.image_fusion.last_confidences
    assert text.shape == (8, len(net.text_backbone.layers))  # every layer but the guide (embeddings included)
    assert image.shape == (8, len(net.image_backbone.stages) - 1)
    for w in (text, image):
        assert torch.allclose(w.sum(1), torch.ones(8)) and (w > 0).all()


def test_sherl_gate_starts_closed_and_redundancy_divides_by_at_least_one(models: tuple[Path, Path]) -> None:
    net = build("sherl", config(models))
    assert isinstance(net, SHERL)
    assert net.text_fusion.gate().item() == 0 and net.image_fusion.gate().item() == 0
    step(net)
    for fusion in (net.text_fusion, net.image_fusion):
        assert fusion.last_redundancy is not None and (fusion.last_redundancy >= 1 - 1e-5).all()
        sums = fusion.last_weights.sum(1)  # l1-normalised over layers; 0 where ReLU silenced every layer
        assert torch.allclose(sums, (sums > 0.5).float(), atol=1e-5) and (sums > 0.5).any()
        assert fusion.theta.grad is not None  # the gate learns to open
    # with the gate closed the late route reads only the side network: h_{L-1} does not reach the output
    text = net.text_backbone
    images, ids, mask = batch(net)
    states, m = text.hidden_states(ids, mask, upto=len(text.layers) - 1)
    h = states[-1].clone().requires_grad_()
    y = net.text_up(net.text_fusion([d(s) for d, s in zip(net.text_down, states)])) + net.text_fusion.gate() * h
    text.layer(len(text.layers) - 1, y, m).sum().backward()
    assert h.grad is not None and h.grad.abs().max() == 0


@pytest.mark.heavy  # four models' steps and two layer measurements: about 12 s on the shared CI machine
def test_memory_saved_for_backward(models: tuple[Path, Path]) -> None:
    saved = {}
    for method in ("full-finetune", "unipt", "sherl", "linear-probe"):
        torch.manual_seed(0)
        saved[method] = step(build(method, config(models)))
    assert saved["unipt"] <= 0.35 * saved["full-finetune"], saved
    assert saved["linear-probe"] < saved["unipt"] < saved["sherl"] < saved["full-finetune"], saved
    # SHERL's surplus over UniPT is about one pre-trained layer's activations (its late route)
    net = build("sherl", config(models))
    images, ids, mask = batch(net)
    text = net.text_backbone
    with torch.no_grad():
        states, m = text.hidden_states(ids, mask, upto=len(text.layers) - 1)
        grid = net.image_backbone.stage_features(images, before_last_block=True)[-1]
    params = list(net.parameters())
    _, one_text = saved_bytes(text.layer, len(text.layers) - 1, states[-1].clone().requires_grad_(), m, exclude=params)
    _, one_image = saved_bytes(net.image_backbone.blocks()[-1], grid.clone().requires_grad_(), exclude=params)
    surplus = saved["sherl"] - saved["unipt"]
    assert 0.5 * (one_text + one_image) <= surplus <= 2.0 * (one_text + one_image), (surplus, one_text, one_image)


def test_saved_tensor_meter_counts_each_storage_once_and_skips_parameters() -> None:
    w = torch.nn.Parameter(torch.randn(64, 64))
    x = torch.randn(16, 64, requires_grad=True)
    with SavedTensorMeter([w]) as meter:
        y = x * x  # saves x twice: one storage
        z = y[:8] @ w  # saves a view of y and the parameter w
    assert meter.bytes == x.nbytes + y.nbytes
    (z.sum()).backward()
    assert x.grad is not None
    with SavedTensorMeter() as meter:
        with torch.no_grad():
            _ = x * x
    assert meter.bytes == 0


def test_optimizer_state_is_read_from_the_optimizer() -> None:
    params = [torch.nn.Parameter(torch.randn(10, 10)), torch.nn.Parameter(torch.randn(5))]
    meter = OptimizerStateMeter(params)
    try:
        opt = torch.optim.Adam(params)
        sum(p.sum() for p in params).backward()
        opt.step()
        other = torch.optim.Adam([torch.nn.Parameter(torch.randn(1000))])
        other.step()  # another optimiser's steps are not counted
        assert meter.bytes == 2 * (100 + 5) * 4 + 2 * 4  # two moments, one float32 step counter per tensor
    finally:
        meter.close()


def test_pool_sizes_come_from_the_feature_shapes(models: tuple[Path, Path]) -> None:
    for size, grid in ((64, 4), (96, 6), (128, 8)):
        bb = ImageBackbone(ImageBackboneConfig(model=models[1], image_size=size))
        assert bb.shapes[-1][1:] == (grid, grid)
        feats = bb.stage_features(torch.zeros(2, 3, size, size, dtype=torch.uint8))
        assert all(guided_sum_pool(f, (grid, grid)).shape[-2:] == (grid, grid) for f in feats)
    x = torch.zeros(1, 2, 4, 4)
    x[0, :, 0, 0] = 4.0  # the salient position of its window leads the pooled cell
    pooled = guided_sum_pool(x, (2, 2))
    assert pooled[0, 0, 0, 0] > 3.5 and pooled[0, 0, 1, 1] == 0
    assert guided_sum_pool(torch.randn(1, 3, 5, 7), (2, 3)).shape == (1, 3, 2, 3)  # grids that do not divide


def test_timm_resnets_load_from_a_local_state_dict(tmp_path: Path) -> None:
    import timm

    torch.manual_seed(1)
    ref = timm.create_model("resnet18", pretrained=False)
    torch.save(ref.state_dict(), tmp_path / "r18.pt")
    bb = ImageBackbone(ImageBackboneConfig(timm="resnet18", checkpoint=tmp_path / "r18.pt", image_size=64))
    assert [c for c, _, _ in bb.shapes] == [64, 128, 256, 512] and bb.shapes[-1][1:] == (2, 2)
    assert torch.equal(bb.model.layer4[1].conv2.weight, ref.layer4[1].conv2.weight)
    assert len(bb.blocks()) == 8
    with pytest.raises(BackboneError, match="does not exist"):
        ImageBackbone(ImageBackboneConfig(timm="resnet18", checkpoint=tmp_path / "missing.pt", image_size=64))


def test_bad_backbones_and_configs_are_clear_errors(models: tuple[Path, Path], tmp_path: Path) -> None:
    with pytest.raises(BackboneError, match="config.json"):
        build("unipt", config((tmp_path, models[1])))
    with pytest.raises(ValueError, match="exactly one"):
        config(models, image={"model": str(models[1]), "timm": "resnet50"})
    with pytest.raises(ValueError, match="unknown transfer method"):
        build("lora", config(models))
    one_block = make_tiny_resnet(tmp_path / "r1")
    cfg_file = one_block / "config.json"
    cfg_file.write_text(cfg_file.read_text().replace('"depths": [\n    1,\n    1,\n    2\n  ]', '"depths": [1, 1, 1]'))
    assert '"depths": [1, 1, 1]' in cfg_file.read_text()
    with pytest.raises(BackboneError, match="at least 2 blocks"):
        build("sherl", config((models[0], one_block)))
    with pytest.raises(BackboneError, match="not a BERT-family"):
        build("unipt", config((models[1], models[1])))
