"""DyTrack's parts, fast: config checks, exits and their stopping rule, feature recycling, the
losses' targets and gradients, crops, and the pair sampler streaming the tracking shards
resumably (shards written by the tracking build's own part function)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from fusionweave.pipelines.storage.shard_sink import write_shard
from fusionweave.pipelines.tracking.config import TrackingConfig
from fusionweave.pipelines.tracking.pipeline import check, sequence_part
from fusionweave.pipelines.tracking.synthetic import generate
from fusionweave.trainers.dytrack import crops
from fusionweave.trainers.dytrack.config import DyTrackConfig, ModelConfig
from fusionweave.trainers.dytrack.data import pair_loader
from fusionweave.trainers.dytrack.losses import dytrack_loss, heatmap_target, target_mask
from fusionweave.trainers.dytrack.model import DyTrackNet

SMALL = dict(dim=32, depth=4, heads=2, patch=8, template_size=16, search_size=32, exits=[2, 4], head_dim=16)


def test_config_refuses_inconsistent_exits() -> None:
    with pytest.raises(ValidationError, match="ending at 4"):
        ModelConfig(**{**SMALL, "exits": [1, 3]})
    with pytest.raises(ValidationError, match="multiple of patch"):
        ModelConfig(**{**SMALL, "search_size": 30})
    with pytest.raises(ValidationError, match="one per exit but the last"):
        DyTrackConfig(train=["x"], model=SMALL, track={"thresholds": [0.5, 0.5]})


def test_exits_stop_by_threshold_and_recycle() -> None:
    torch.manual_seed(0)
    net = DyTrackNet(ModelConfig(**SMALL)).eval()
    t = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8)
    s = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        outs = net(t, s)
    assert len(outs) == 2 and outs[0].maps["heat"].shape == (2, 1, 4, 4) and outs[1].box.shape == (2, 4)
    assert ((outs[1].box >= 0) & (outs[1].box <= 1)).all()
    _, conf, k, depth = net.track_step(t[:1], s[:1], [0.0])  # any confidence passes 0: the first exit
    assert (k, depth) == (0, 2)
    assert net.track_step(t[:1], s[:1], [1.01])[2:] == (1, 4)  # none passes 1.01: the full depth
    box, conf2, _, _ = net.track_step(t[:1], s[:1], [float(outs[0].confidence[0]) - 1e-6])
    assert conf2 == pytest.approx(float(outs[0].confidence[0]), abs=1e-6)
    # feature recycling: the last exit's output depends on the previous exit's head
    with torch.no_grad():
        net.recycle[0].weight.mul_(10.0)
        net.recycle[0].bias.add_(1.0)
        changed = net(t, s)
    assert torch.allclose(changed[0].maps["heat"], outs[0].maps["heat"])
    assert not torch.allclose(changed[1].maps["heat"], outs[1].maps["heat"])


def test_loss_targets_and_gradients() -> None:
    box = torch.tensor([[0.5, 0.5, 0.25, 0.25], [0.1, 0.9, 0.1, 0.1]])
    heat = heatmap_target(box, 8, 1.0)
    assert heat[0, 0, 4, 4] == 1 and heat[1, 0, 7, 0] == 1 and heat.max() == 1
    mask = target_mask(box, 8).view(2, 8, 8)
    assert mask[0].sum() == 4 and mask[0, 3:5, 3:5].all()  # cells whose centres lie in the box
    torch.manual_seed(0)
    cfg = DyTrackConfig(train=["x"], model=SMALL, track={"thresholds": [0.5]})
    net = DyTrackNet(cfg.model)
    outs = net(torch.rand(2, 3, 16, 16), torch.rand(2, 3, 32, 32))
    loss, logs = dytrack_loss(outs, box, cfg.loss)
    assert torch.isfinite(loss) and {"focal_0", "l1_1", "giou_1", "distill_0"} <= set(logs)
    loss.backward()
    assert net.heads[0].heat.weight.grad.abs().sum() > 0 and net.blocks[0].linear1.weight.grad.abs().sum() > 0
    # distillation pulls the early exit only: the deepest tokens are its detached target
    net.zero_grad()
    no_distill = dytrack_loss(net(torch.rand(2, 3, 16, 16), torch.rand(2, 3, 32, 32)), box,
                              cfg.loss.model_copy(update={"distill": 0.0}))[1]
    assert "distill_0" not in no_distill


def test_crop_maps_boxes_both_ways() -> None:
    from PIL import Image

    box = np.array([40.0, 30.0, 20.0, 10.0])
    region = crops.crop_region(box, 4.0)
    assert region[2] == pytest.approx(4 * np.sqrt(200))
    cbox = crops.to_crop(box, region)
    assert cbox[:2] == pytest.approx([0.5, 0.5]) and np.allclose(crops.to_frame(cbox, region), box)
    img = Image.new("RGB", (64, 48), (200, 10, 10))
    patch = crops.crop(img, region, 32)
    assert patch.shape == (32, 32, 3) and patch[-1, -1].tolist() == [0, 0, 0]  # outside the frame: zero
    assert patch[0, 0].tolist() == [200, 10, 10]
    assert crops.clip_box(np.array([-50.0, 0, 10, 2]), 64, 48, 4.0).tolist() == [-5.0, -1.0, 10.0, 4.0]


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("seqs")
    generate(root / "data", easy=2, hard=1, frames=12, size=64)
    cfg = TrackingConfig(sources=[{"name": "syn", "layout": "lasot", "root": str(root / "data")}])
    out = []
    for p in check(cfg, None):  # the build's own part function, each sequence's shard
        write_shard(root / f"{p['part']}.tar", sequence_part(cfg, p).samples)
        out.append(root / f"{p['part']}.tar")
    return out


def test_pairs_stream_resumably(shards: list[Path]) -> None:
    cfg = DyTrackConfig(train=shards, model=SMALL, track={"thresholds": [0.5]},
                        sampler={"window": 6, "pairs": 5, "max_gap": 3})
    loader = pair_loader(cfg, 0, 1)
    assert len(loader) == 6  # 36 frames in windows of 6
    it = iter(loader)
    first = [next(it) for _ in range(3)]
    b = first[0]
    assert b["template"].shape == (5, 3, 16, 16) and b["search"].shape == (5, 3, 32, 32) and b["box"].shape == (5, 4)
    assert b["template"].dtype == torch.uint8 and ((b["box"][:, 2:] > 0) & (b["box"][:, 2:] < 1)).all()
    state = loader.state_dict()
    rest = [next(it) for _ in range(3)]
    again = pair_loader(cfg, 0, 1)
    again.load_state_dict(state)
    resumed = list(again)
    assert len(resumed) == 3
    for x, y in zip(rest, resumed):
        assert torch.equal(x["search"], y["search"]) and torch.equal(x["box"], y["box"])


def test_cli_train_val_best_resume_and_bad_data(shards: list[Path], tmp_path: Path,
                                                capsys: pytest.CaptureFixture) -> None:
    import json

    import yaml

    from fusionweave.orchestration.cli import main

    cfg = tmp_path / "dytrack.yaml"
    cfg.write_text(yaml.safe_dump({"train": [str(p) for p in shards], "val": [str(shards[0])], "model": SMALL,
                                   "track": {"thresholds": [0.5]}, "threads": 1,
                                   "sampler": {"window": 12, "pairs": 4},
                                   "recipe": {"epochs": 1, "device": "cpu", "lr": 1e-3}}))
    out = tmp_path / "run"
    args = ["train", "dytrack", "--config", str(cfg), "--out", str(out), "--no-progress"]
    assert main(args) == 0
    line = json.loads((out / "metrics.jsonl").read_text())
    assert line["step"] == 3 and 0 <= line["auc"] <= 100 and 2 <= line["mean_depth"] <= 4 and line["best"]
    assert (out / "final" / "model.pt").is_file() and (out / "best" / "dytrack.json").is_file()
    assert main(args) == 0  # finished: the rerun resumes at its end and trains nothing more
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1
    capsys.readouterr()
    assert main([*args[:-1], "--set", "model.exits=[1,3]"]) == 2
    assert "exits must be increasing layers in 1..4 ending at 4" in capsys.readouterr().err
    assert main(["train", "dytrack", "--config", str(cfg), "--out", str(tmp_path / "r2"),
                 "--set", f"train=[{tmp_path / 'nothing'}]"]) == 2
    assert "train: " in (err := capsys.readouterr().err) and "could not be read" in err
    (tmp_path / "empty").mkdir()
    assert main(["train", "dytrack", "--config", str(cfg), "--out", str(tmp_path / "r3"),
                 "--set", f"val=[{tmp_path / 'empty'}]"]) == 2
    assert "val: no shards" in capsys.readouterr().err

    # eval: bad data, missing results, bad thresholds are one line each
    ev = ["eval", "dytrack", "--checkpoint", str(out / "final"), "--out", str(tmp_path / "ev")]
    assert main([*ev, "--data", str(tmp_path / "nothing")]) == 2
    assert "--data: " in capsys.readouterr().err
    assert main([*ev, "--data", str(shards[0]), "--thresholds", "0.5,0.5"]) == 2
    assert "1 values (one per exit but the last), got 2" in capsys.readouterr().err
    assert main([*ev, "--data", str(shards[0]), "--results", str(tmp_path)]) == 2
    assert "no result for sequence" in capsys.readouterr().err
    assert main([*ev, "--data", str(shards[0])]) == 0
    assert (tmp_path / "ev" / "results.json").is_file()
