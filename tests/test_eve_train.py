"""EVE's three stages through `train_eve` with a stand-in for the core's loop: each stage starts
from the previous one's folder, stage 1 leaves the LLM untouched and stage 2 trains it, stage 3
trains on vicuna_v1 conversations, finished stages are skipped on a rerun, rejects are reported;
and the stage configs carry the paper's recipes."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from eve_helpers import IMAGE, llava_rows, one_thread, tiny_models, write_json  # noqa: F401
from fusionweave.trainers.core.method import StepContext
from fusionweave.trainers.eve.method import EveConfig, EveMethod


def small_fit(calls: list):
    """The core loop's contract in miniature: model, loader, a few optimiser steps, save_final."""

    def fit(method: EveMethod, out: Path, progress: bool = True) -> None:
        calls.append((method.stage, method.init))
        out.mkdir(parents=True, exist_ok=True)
        model = method.model()
        opt = torch.optim.AdamW(method.parameters(model), lr=method.recipe.lr)
        ctx = StepContext(0, 0, torch.device("cpu"), 0, 1)
        for i, batch in enumerate(method.loader(0, 1)):
            loss, logs = method.loss(model, batch, ctx)
            opt.zero_grad()
            loss.backward()
            opt.step()
            assert logs["ce"] > 0 and (logs["pal"] > 0) == (method.stage < 3)
            if i == 2:
                break
        method.save_final(model, out)

    return fit


def config(tmp_path: Path, models: tuple[Path, Path]) -> EveConfig:
    pre = write_json(tmp_path / "pre.json", llava_rows(tmp_path, 8))
    sft_rows = llava_rows(tmp_path, 6, human="<image>\nwhat is in this image?")
    sft_rows.append({"id": "lost", "image": "images/none.png", "conversations": sft_rows[0]["conversations"]})
    sft = write_json(tmp_path / "sft.json", sft_rows)

    def data(p: Path) -> dict:
        return {"conversations": [{"path": p, "image_root": tmp_path}], "batch_size": 2, "workers": 0}

    return EveConfig(llm=models[0], teacher=models[1], image=IMAGE, pel={"width": 32, "heads": 4},
                     pal={"every": 1, "layers": 2, "heads": 4}, stage1={"data": data(pre)},
                     stage2={"data": data(pre), "recipe": {"grad_accum": 2}}, stage3={"data": data(sft)})


def llm_weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(folder / "model.safetensors")


def test_three_stages_chain_skip_and_resume(tmp_path: Path) -> None:
    from fusionweave.trainers.eve.model import EveModel
    from fusionweave.trainers.eve.train import train_eve

    models = tiny_models(tmp_path / "models")
    cfg = config(tmp_path, models)
    out = tmp_path / "run"
    calls: list = []
    report = train_eve(cfg, out, fit=small_fit(calls))
    assert calls == [(1, None), (2, out / "stage1" / "final"), (3, out / "stage2" / "final")]
    assert report["model"] == str(out / "stage3" / "final")
    assert report["stage3"]["rejects"] == {"missing_image_file": 1} and report["stage1"]["rejects"] == {}
    assert json.loads((out / "eve_report.json").read_text()) == report
    base = llm_weights(models[0])  # stage 1: the LLM is frozen
    s1, s2 = (llm_weights(out / f"stage{n}" / "final" / "llm") for n in (1, 2))
    assert all(torch.equal(base[k], s1[k]) for k in base)
    assert any(not torch.equal(s1[k], s2[k]) for k in s1)  # stage 2 trains it
    final = EveModel.from_pretrained(out / "stage3" / "final")
    assert final.arch.template == "vicuna_v1" and isinstance(final.generate(torch.zeros(3, 20, 30, dtype=torch.uint8),
                                                                            "what is in this image?", 3), str)

    calls.clear()
    train_eve(cfg, out, fit=small_fit(calls))  # everything finished: nothing runs
    assert calls == []
    shutil.rmtree(out / "stage3" / "final")  # an interrupted stage 3 runs again from stage 2's model
    report = train_eve(cfg, out, fit=small_fit(calls))
    assert calls == [(3, out / "stage2" / "final")] and report["stage1"]["status"] == "already finished"


def test_stage_recipes_are_the_papers_and_partial_overrides_keep_them(tmp_path: Path) -> None:
    cfg = EveConfig(llm=tmp_path, teacher=tmp_path, stage2={"recipe": {"grad_accum": 4}})
    s1, s2, s3 = cfg.stage1, cfg.stage2, cfg.stage3
    assert (s1.recipe.lr, s2.recipe.lr, s3.recipe.lr) == (4e-4, 4e-5, 2e-5)
    assert s2.recipe.grad_accum == 4 and s2.recipe.warmup_ratio == 0.03
    for s in (s1, s2, s3):
        r = s.recipe
        assert (r.optimizer, r.weight_decay, r.schedule, r.warmup_ratio, r.mixed_precision, r.epochs) == (
            "adamw", 0.0, "cosine", 0.03, "bf16", 1)
    assert (s1.train, s2.train, s3.train) == ("aligner", "all", "all")
    assert (s1.template, s3.template) == ("plain", "vicuna_v1") and s3.pal_weight == 0
    assert cfg.image.max_side == 672 and cfg.image.patch == 14 and cfg.pel.width == 1024
    with pytest.raises(ValueError, match="multiple of 2 x patch"):
        EveConfig(llm=tmp_path, teacher=tmp_path, image={"max_side": 600})
    with pytest.raises(ValueError, match="either shards or conversations"):
        EveConfig(llm=tmp_path, teacher=tmp_path, stage1={"data": {}})
    from eve_helpers import PEL
    from fusionweave.trainers.eve.model import EveModel

    with pytest.raises(ValueError, match="PAL wants 9 layers"):  # the default PAL on a 2-layer LLM
        EveModel.build(*tiny_models(tmp_path / "m"), IMAGE, PEL)


def test_the_core_loop_runs_a_stage(tmp_path: Path) -> None:
    loop = pytest.importorskip("fusionweave.trainers.core.loop")
    from fusionweave.trainers.eve.train import train_eve

    full = config(tmp_path, tiny_models(tmp_path / "models"))
    cfg = full.model_copy(update={"stage2": full.stage2.model_copy(update={"data": None}),
                                  "stage3": full.stage3.model_copy(update={"data": None})})
    report = train_eve(cfg, tmp_path / "run", fit=loop.fit, progress=False)
    assert report["stage1"]["status"] == "trained" and report["stage2"]["status"] == "skipped (no data)"
    steps = [json.loads(line) for line in (tmp_path / "run" / "stage1" / "steps.jsonl").read_text().splitlines()]
    assert len(steps) == 4 and all(s["pal"] > 0 and s["ce"] > 0 for s in steps)
    assert steps[-1]["lr"] < steps[0]["lr"] <= 4e-4  # stage 1 lr, cosine
    assert report["model"] == str(tmp_path / "run" / "stage1" / "final")


def test_example_config_validates() -> None:
    import yaml

    from fusionweave.configs import __file__ as configs_init

    cfg = EveConfig.model_validate(yaml.safe_load((Path(configs_init).parent / "eve.yaml").read_text()))
    assert (cfg.stage1.recipe.lr, cfg.stage1.recipe.grad_accum, cfg.stage3.recipe.lr) == (4e-4, 8, 2e-5)
    assert cfg.stage1.train == "aligner" and cfg.stage3.template == "vicuna_v1" and cfg.pal.layers == 9
