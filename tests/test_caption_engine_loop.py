"""The DenseFusion loop from the CLI: a densefusion build writes the teacher seed set, `train
caption-engine` fine-tunes a tiny LLaVA on that build (LoRA, saved as base + adapter), and a second
build captions with the engine folder; each sample's json, build.json and the card name the
engine's checkpoint; `eval caption-engine` scores the held-out slice into metrics.jsonl."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.caption_engine_data import make_set, tiny_pivot
from tests.helpers import cli

pytestmark = pytest.mark.heavy  # two builds on Ray, a training and an eval (~2-3 min)


def build(cfg: dict, path: Path, out: Path) -> None:
    path.write_text(yaml.safe_dump({"seed": 0, "densefusion": cfg}))
    res = cli("build", "densefusion", "--config", str(path), "--out", str(out), "--no-progress", "--num-cpus", "2")
    assert res.returncode == 0, res.stderr[-3000:]


def test_teacher_sft_engine_captions_loop(tmp_path: Path) -> None:
    import webdataset as wds

    data = make_set(tmp_path / "data", 16)
    base = {"input": [str(data["perceive"])], "chunk_size": 4, "export": {"images": "png"}}
    teacher = {**base, "teacher": {"enabled": True, "n": 12, "captioner": {"kind": "priors-template"}}}
    build(teacher, tmp_path / "teacher.yaml", tmp_path / "b1")
    assert len(json.loads((tmp_path / "b1" / "teacher_export" / "teacher_sft.json").read_text())) == 12

    model = tiny_pivot(tmp_path / "pivot")
    train_cfg = {"model": str(model), "data": {"build": str(tmp_path / "b1"), "holdout": 4, "batch_size": 4},
                 "lora": {"enabled": True, "r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"],
                          "save": "adapter"},
                 "recipe": {"lr": 3e-3, "epochs": 1, "warmup_ratio": 0.0, "device": "cpu"}}
    (tmp_path / "engine.yaml").write_text(yaml.safe_dump(train_cfg))
    res = cli("train", "caption-engine", "--config", str(tmp_path / "engine.yaml"), "--out", str(tmp_path / "run"),
              "--no-progress")
    assert res.returncode == 0, res.stderr[-3000:]
    engine = tmp_path / "run" / "engine"
    checkpoint = json.loads((engine / "engine.json").read_text())["checkpoint"]

    res = cli("eval", "caption-engine", "--run", str(tmp_path / "run"), "--max-new-tokens", "16")
    assert res.returncode == 0, res.stderr[-3000:]
    got = json.loads((tmp_path / "run" / "engine_eval.json").read_text())
    assert got["n"] == 4 and got["checkpoint"] == checkpoint and 0 <= got["bleu4"] <= 1
    assert got["prior_use"]["samples_with_priors"] == 4  # experts.json found through the build's inputs
    last = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["eval"] == "caption-engine" and "cider" in last and "rouge_l" in last

    captioner = {"kind": "transformers", "model": str(engine), "max_new_tokens": 12, "batch_size": 4}
    build({**base, "captioner": captioner}, tmp_path / "engine-build.yaml", tmp_path / "b2")
    files = sorted(str(p) for p in (tmp_path / "b2" / "caption").glob("shard-*.tar"))
    samples = list(wds.WebDataset(files, shardshuffle=False))
    assert len(samples) == 16
    assert {json.loads(s["json"])["captioner"]["engine"]["checkpoint"] for s in samples} == {checkpoint}
    info = json.loads((tmp_path / "b2" / "build.json").read_text())
    assert info["captioners"]["caption"]["engine"]["checkpoint"] == checkpoint
    res = cli("card", str(tmp_path / "b2"))
    assert res.returncode == 0, res.stderr[-3000:]
    card = (tmp_path / "b2" / "README.md").read_text()
    assert checkpoint in card and "caption engine" in card
