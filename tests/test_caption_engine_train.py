"""Caption-engine SFT on the training core: full fine-tuning trains projector + LLM and leaves the
vision tower as it was; LoRA trains < 5% of the parameters and saves base + adapter or merged
weights, which the densefusion `transformers` captioner loads as they are and which caption alike."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.caption_engine_data import engine_config, make_set, tiny_pivot

pytestmark = pytest.mark.heavy  # four short CPU trainings and their generations (~1 min)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("ce-train")
    return {**make_set(root / "data", 24), "root_dir": root}


def train(cfg: dict, out: Path) -> dict:
    from fusionweave.trainers.caption_engine.config import EngineConfig
    from fusionweave.trainers.caption_engine.method import run
    from fusionweave.trainers.core.loop import fit

    return run("caption-engine", EngineConfig.model_validate(cfg), out, lambda m, o: fit(m, o, progress=False))


def weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return {k: v for f in sorted(folder.glob("*.safetensors")) for k, v in load_file(f).items()}


def captions(engine: Path, rows: list[dict], root: Path) -> list[str]:
    from fusionweave.trainers.caption_engine.evaluate import generate

    ex = [{"image": (root / r["image"]).read_bytes(), "prompt": r["conversations"][0]["value"].split("\n", 1)[1]}
          for r in rows[:4]]
    return generate(engine, ex, max_new_tokens=12, batch_size=4)[0]


def test_full_fine_tuning_trains_projector_and_llm_not_the_vision_tower(setup: dict) -> None:
    model = tiny_pivot(setup["root_dir"] / "pivot")
    res = train(engine_config(model, setup["sft"], recipe={"epochs": 2}), setup["root_dir"] / "full")
    before, after = weights(model), weights(Path(res["engine"]))
    assert before.keys() == after.keys()
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert moved and not {k for k in moved if "vision_tower" in k}
    assert any("multi_modal_projector" in k for k in moved) and any("language_model" in k for k in moved)
    assert res["trained_share"] > 0.5 and res["rejects"] == {}
    steps = [json.loads(x) for x in (setup["root_dir"] / "full" / "steps.jsonl").read_text().splitlines()]
    assert steps[-1]["loss"] < steps[0]["loss"] and all(s["supervised"] > 0 for s in steps)
    info = json.loads((Path(res["engine"]) / "engine.json").read_text())
    assert info["format"] == "merged" and info["checkpoint"] == res["checkpoint"] and info["step"] == 6
    assert all(isinstance(c, str) for c in captions(Path(res["engine"]), setup["rows"], setup["root"]))


def test_lora_trains_under_5_percent_and_adapter_equals_merged(setup: dict) -> None:
    model = tiny_pivot(setup["root_dir"] / "pivot-lora", hidden=256, layers=6)
    lora = {"enabled": True, "r": 8, "alpha": 16, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}
    runs = {}
    for save in ("adapter", "merged"):
        cfg = engine_config(model, setup["sft"], lora={**lora, "save": save}, recipe={"epochs": 2, "lr": 1e-2})
        runs[save] = train(cfg, setup["root_dir"] / f"lora-{save}")
    assert 0 < runs["adapter"]["trained_share"] < 0.05
    adapter = Path(runs["adapter"]["engine"])
    assert (adapter / "adapter_config.json").is_file() and not (adapter / "config.json").exists()
    assert json.loads((adapter / "engine.json").read_text())["format"] == "adapter"
    # the projector trains fully beside the adapter, and travels with it
    assert any("multi_modal_projector" in k for k in weights(adapter))
    merged = weights(Path(runs["merged"]["engine"]))
    base = weights(model)
    assert not any("vision_tower" in k and not torch.equal(base[k], merged[k]) for k in base)
    assert any("q_proj" in k and not torch.equal(base[k], merged[k]) for k in base)
    a = captions(adapter, setup["rows"], setup["root"])
    assert a == captions(Path(runs["merged"]["engine"]), setup["rows"], setup["root"])
