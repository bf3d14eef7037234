"""PathWeave's parts, fast: adapter and gate initialisation, noise only in training, which
parameters each method trains (by name), the continual metrics, and bad input refused in one line."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from fusionweave.orchestration.config import ConfigError
from fusionweave.trainers.mcl_stages import Stage
from fusionweave.trainers.pathweave.adapters import AdaptedLinear
from fusionweave.trainers.pathweave.config import PathWeaveConfig
from fusionweave.trainers.pathweave.plan import routing, stage_plans, trainable_parts
from fusionweave.trainers.pathweave.report import continual_metrics
from fusionweave.trainers.pathweave.train import checked_stages

MODS = ["image", "video", "audio", "depth", "pointcloud"]


def test_new_paths_change_nothing_and_gates_start_uniform() -> None:
    torch.manual_seed(0)
    lin = AdaptedLinear(torch.nn.Linear(16, 12))
    x = torch.randn(4, 5, 16)
    lin.add_route("video", ["video"], 8, gated=True)
    lin.add_route("audio", ["video", "audio"], 8, gated=True)
    for path in ("video", "audio"):
        lin.path = path
        assert torch.equal(lin(x), lin.base(x))  # zero-initialised up-projections (and identity in-adapters)
    lin.eval()
    w = lin.gate_weights(x, "audio")
    assert torch.allclose(w, torch.full_like(w, 0.5))  # uniform at step 0
    lin.train()
    noisy = lin.gate_weights(x, "audio")
    assert not torch.allclose(noisy, torch.full_like(noisy, 0.5))  # noise follows module.training
    assert "video" not in lin.gates and set(lin.inner) == {"audio__video"}  # a lone expert needs no gate


def test_earlier_paths_are_untouched_by_a_later_stage() -> None:
    torch.manual_seed(0)
    lin = AdaptedLinear(torch.nn.Linear(16, 12))
    lin.add_route("video", ["video"], 8, gated=True)
    with torch.no_grad():
        lin.experts["video"].up.weight.normal_()
    x = torch.randn(3, 16)
    lin.path = "video"
    before = lin(x)
    lin.add_route("audio", ["video", "audio"], 8, gated=True)
    with torch.no_grad():  # everything the audio stage trains moves
        for n, p in lin.named_parameters():
            if ".audio" in n or n.startswith(("inner.audio__", "gates.audio")):
                p.add_(torch.randn_like(p))
    assert torch.equal(lin(x), before)


def _stages() -> list[Stage]:
    return [Stage(i, m, [], [], MODS[:i + 1]) for i, m in enumerate(MODS)]


def test_what_trains_by_name() -> None:
    steps = {m: 10 for m in MODS}
    pw = stage_plans("pathweave", _stages(), steps)
    assert [p.label for p in pw] == MODS
    r = routing("pathweave", pw, 3)
    assert r.routes == {"video": ["video"], "audio": ["video", "audio"], "depth": ["video", "audio", "depth"]}
    assert r.paths == {"video": "video", "audio": "audio", "depth": "depth"} and r.gated  # image: no adapter
    assert trainable_parts("pathweave", pw, 0) is None  # the bridge itself
    assert trainable_parts("pathweave", pw, 3) == (".experts.depth.", ".inner.depth__", ".gates.depth.",
                                                   "input_maps.depth.")
    seq = routing("sequential-finetune", pw, 2)
    assert seq.routes == {"shared": ["shared"]} and set(seq.paths.values()) == {"shared"} and "image" in seq.paths
    joint = stage_plans("joint", _stages(), steps)
    assert [p.label for p in joint] == ["image", "joint"] and joint[1].steps == 40
    assert joint[1].modalities == tuple(MODS[1:])


def test_continual_metrics() -> None:
    m = [[80.0, None, None], [70.0, 60.0, None], [50.0, 65.0, 90.0]]
    r = continual_metrics(m, ["a", "b", "c"])
    assert r["average"] == pytest.approx((50 + 65 + 90) / 3)
    assert r["forgetting"] == {"a": 30.0, "b": -5.0}  # b gained after its stage: negative forgetting
    assert r["bwt"] == pytest.approx(((50 - 80) + (65 - 60)) / 2)
    assert r["plasticity"] == {"a": 80.0, "b": 60.0, "c": 90.0}


def _config(tmp: Path, build: Path, encoders: list[str] = MODS) -> PathWeaveConfig:
    return PathWeaveConfig.model_validate({
        "build": str(build), "model": {"llm": "x", "encoders": {m: {"kind": "vision", "model": "x"} for m in encoders}},
        "method": {"steps": {m: 1 for m in MODS}}})


def _manifest(build: Path, empty: str | None = None) -> Path:
    stages = [{"stage": i, "modality": m, "train": [{"source": f"{m}_train", "ratio": 1.0,
                                                      "shards": [] if m == empty else [f"mcl/{m}/shard-000000.tar"]}],
               "eval": [], "evaluate_after": MODS[:i + 1]} for i, m in enumerate(MODS)]
    (build / "mcl_export").mkdir(parents=True)
    (build / "mcl_export" / "stages.json").write_text(json.dumps({"format": "fusionweave.mcl-stages/1",
                                                                  "stages": stages}))
    return build


def test_bad_input_refused_before_training(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no MCL stage manifest"):
        checked_stages(_config(tmp_path, tmp_path / "nothing"))
    build = _manifest(tmp_path / "b1")
    with pytest.raises(ConfigError, match="stage 2 is audio, which has no encoder"):
        checked_stages(_config(tmp_path, build, [m for m in MODS if m != "audio"]))
    build = _manifest(tmp_path / "b2", empty="depth")
    with pytest.raises(ConfigError, match=r"stage 3 \(depth\) has no training samples"):
        checked_stages(_config(tmp_path, build))


def test_cli_refusal_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`fusionweave train pathweave` on a stage without training shards: the CLI's own entry, in
    process (a subprocess would pay the CLI's imports again for the same code path)."""
    from fusionweave.orchestration.cli import main

    cfg = tmp_path / "pw.yaml"
    build = _manifest(tmp_path / "b", empty="video")
    cfg.write_text(yaml.safe_dump({"build": str(build), "model": {
        "llm": "x", "encoders": {m: {"kind": "vision", "model": "x"} for m in MODS}}}))
    assert main(["train", "pathweave", "--config", str(cfg), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "stage 1 (video) has no training samples" in lines[0] and "Traceback" not in err
    assert not (tmp_path / "run").exists()
