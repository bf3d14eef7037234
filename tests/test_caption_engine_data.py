"""Caption-engine SFT data and scores: the vicuna_v1 mask with the processor's image tokens, counted
template mismatches, the held-out split, COCO caption metrics on hand-worked cases, prior use,
and bad configs / inputs refused in one line."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from fusionweave.trainers.caption_engine import coco_metrics as M
from tests.caption_engine_data import engine_config, make_set, tiny_pivot
from tests.helpers import cli


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("ce-data")
    return {**make_set(root / "data", 24), "model": tiny_pivot(root / "pivot"), "tmp": root}


def encoder(model: Path):  # noqa: ANN201
    from fusionweave.trainers.caption_engine.config import EngineConfig
    from fusionweave.trainers.caption_engine.data import EngineEncoder
    from fusionweave.trainers.caption_engine.model import load_processor

    cfg = EngineConfig.model_validate(engine_config(model, Path("x.json")))
    proc = load_processor(cfg)
    return EngineEncoder(proc, proc.tokenizer.convert_tokens_to_ids("<image>"), 512), proc


def test_only_the_answer_is_supervised_and_the_image_expands_as_the_processor_does(setup: dict) -> None:
    from PIL import Image

    enc, proc = encoder(setup["model"])
    row = setup["rows"][0]
    s = enc("k", Image.open(setup["root"] / row["image"]), row["conversations"])
    image_id = proc.tokenizer.convert_tokens_to_ids("<image>")
    assert int((s["input_ids"] == image_id).sum()) == 4  # 32 px / patch 16 = a 2x2 grid, as the processor writes it
    sup = s["labels"][s["labels"] != -100]
    answer = proc.tokenizer(" " + row["conversations"][1]["value"] + "</s>", add_special_tokens=False)["input_ids"]
    assert sup.tolist() == answer  # the caption and its </s>, nothing of the prompt or the image
    assert s["input_ids"][-len(answer):].tolist() == answer and s["pixel_values"].shape == (3, 32, 32)


def test_mismatches_are_counted_not_trained(setup: dict, tmp_path: Path) -> None:
    from fusionweave.trainers.caption_engine.data import engine_loader, split_rows

    rows = json.loads(setup["sft"].read_text())[:6]
    rows[0]["conversations"][0]["value"] = "no image here"  # no <image>
    rows[1]["conversations"][0]["value"] += " <image>"  # two images
    rows[2]["image"] = "images/missing.png"
    rows[3]["conversations"] = [rows[3]["conversations"][0]]  # no answer
    bad = tmp_path / "sft.json"
    bad.write_text(json.dumps(rows))
    enc, proc = encoder(setup["model"])
    train, held = split_rows(bad, setup["root"], 0, 0)
    loader = engine_loader(train, enc, proc.tokenizer.pad_token_id, 6, 0, 1, 0, 0)
    batches = list(loader)
    assert [len(b["keys"]) for b in batches] == [2]  # the two good rows, and every kept one is supervised
    assert all(((b["labels"] != -100).sum(1) > 0).all() for b in batches)
    assert loader.errors == {"template_no_image": 1, "template_multi_image": 1, "missing_image_file": 1,
                             "template_roles": 1}


def test_the_held_out_slice_is_seeded_and_disjoint(setup: dict) -> None:
    from fusionweave.trainers.caption_engine.data import split_rows

    a_train, a_held = split_rows(setup["sft"], setup["root"], 5, 0)
    b_train, b_held = split_rows(setup["sft"], setup["root"], 5, 0)
    ids = lambda rows: [r.data["id"] for r in rows]  # noqa: E731
    assert ids(a_held) == ids(b_held) and len(a_held) == 5 and len(a_train) == 19
    assert not set(ids(a_held)) & set(ids(a_train))
    assert ids(split_rows(setup["sft"], setup["root"], 5, 1)[1]) != ids(a_held)


def test_bleu_rouge_cider_on_hand_worked_cases() -> None:
    refs, cand = [["the cat sat on the mat"]], ["the cat sat on the mat"]
    assert M.bleu(refs, cand)[3] == pytest.approx(1.0, abs=1e-6)
    assert M.rouge_l(refs, cand) == pytest.approx(1.0)
    # "the cat on the mat" vs "the cat sat on the mat": 1-grams 5/5, 2-grams 3/4, 3-grams 1/3, 4-grams 0/2 (+1e-15),
    # brevity penalty exp(1 - 6/5)
    b = M.bleu(refs, ["the cat on the mat"])
    bp = math.exp(1 - 6 / 5)
    assert b[0] == pytest.approx(bp) and b[1] == pytest.approx(bp * math.sqrt(3 / 4))
    assert b[3] < 1e-3
    # LCS 5, precision 5/5, recall 5/6, beta 1.2
    p, r = 1.0, 5 / 6
    assert M.rouge_l(refs, ["the cat on the mat"]) == pytest.approx((1 + 1.44) * p * r / (r + 1.44 * p))
    # CIDEr-D: with one image every n-gram has idf log(1/1) = 0, so the score is 0. Two images: "a" is in both
    # (idf 0), every other n-gram has idf log 2; an exact match has cosine 1 for n = 1, 2, 3 and 0 for n = 4
    # (no 4-gram), so (1 + 1 + 1 + 0) / 4 x 10 = 7.5
    two = [["a red square"], ["a blue circle"]]
    assert M.cider_d(refs, cand) == 0.0
    assert M.cider_d(two, ["a red square", "a blue circle"]) == pytest.approx(7.5)
    assert 0 < M.cider_d(two, ["a blue square", "a red circle"]) < 7.5
    # tokenisation: lower case, punctuation out; 3-word captions have no 4-gram: (1e-15 / 1e-9) ** (1/4)
    got = M.caption_scores([["A red square."], ["A blue circle!"]], ["a red square", "a blue circle"])
    assert got["rouge_l"] == pytest.approx(1.0) and got["cider"] == pytest.approx(7.5)
    assert got["bleu4"] == pytest.approx((1e-15 / 1e-9) ** 0.25, rel=1e-3)
    with pytest.raises(ValueError):
        M.caption_scores([], [])


def test_prior_use_counts_ocr_strings_and_labels_as_words() -> None:
    from fusionweave.trainers.caption_engine.evaluate import prior_use
    from fusionweave.transforms.prompts import Priors

    p = Priors(ocr=(("OPEN 24h", 0.9), ("Zorb", 0.8)), detections=({"label": "dog"}, {"label": "dog"}, {"label": "cat"}))
    got = prior_use("A dog under a sign reading 'open 24H'; no catalogue.", p)
    assert got == {"ocr": 2, "ocr_used": 1, "labels": 2, "labels_used": 1}  # "catalogue" is not "cat"


@pytest.mark.heavy  # seven in-process CLI runs and one subprocess (~25 s)
def test_bad_configs_and_inputs_are_one_line_errors(setup: dict, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture) -> None:
    import yaml

    from fusionweave.orchestration.cli import main

    def train(cfg: dict, name: str) -> tuple[int, str]:
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        # in-process: the CLI's own error handling, without a torch import per case
        code = main(["train", "caption-engine", "--config", str(path), "--out", str(tmp_path / name), "--no-progress"])
        return code, capsys.readouterr().err

    good = engine_config(setup["model"], setup["sft"])
    cases = {
        "both": ({**good, "data": {"sft": str(setup["sft"]), "build": str(tmp_path)}}, "either data.sft"),
        "nosft": (engine_config(setup["model"], tmp_path / "none.json"), "does not exist"),
        "nobuild": ({**good, "data": {"build": str(tmp_path / "b")}}, "teacher.enabled"),
        "nomodel": (engine_config(tmp_path / "nope", setup["sft"]), "not found"),
        "lora": ({**good, "lora": {"enabled": True, "target_modules": ["nothing"]}}, "match no layer"),
        "holdout": (engine_config(setup["model"], setup["sft"], data={"holdout": 24}), "leaves nothing"),
    }
    from fusionweave.experts.tiny_models import make_tiny_llava

    other = make_tiny_llava(tmp_path / "eos")  # its tokenizer's EOS is [EOS], not </s>
    cases["eos"] = (engine_config(other, setup["sft"]), "EOS")
    for name, (cfg, words) in cases.items():
        code, err = train(cfg, name)
        assert code == 2 and words in err.strip().splitlines()[-1], (name, err[-1500:])
    assert main(["eval", "caption-engine", "--run", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["eval", "caption-engine", "--engine", str(setup["model"])]) == 2  # no --data
    res = cli("train", "caption-engine", "--config", str(tmp_path / "both.yaml"), "--out", str(tmp_path / "x"))
    assert res.returncode == 2 and "Traceback" not in res.stderr  # and as a process: a line, exit 2


def test_the_shipped_recipe_validates_and_the_demo_pivot_is_trainable(tmp_path: Path) -> None:
    import yaml

    from fusionweave.configs import __file__ as configs_init
    from fusionweave.experts.tiny_models import TINY_MODELS
    from fusionweave.trainers.caption_engine.config import EngineConfig
    from fusionweave.trainers.caption_engine.model import load_processor

    cfg = EngineConfig.model_validate(yaml.safe_load((Path(configs_init).parent / "caption_engine.yaml").read_text()))
    assert cfg.recipe.lr == 2e-5 and cfg.recipe.warmup_ratio == 0.03 and cfg.freeze_vision and not cfg.lora.enabled
    partial = EngineConfig.model_validate({"model": "m", "data": {"build": "b"}, "recipe": {"lr": 1e-3}})
    assert partial.recipe.warmup_ratio == 0.03 and partial.recipe.lr == 1e-3  # a partial recipe keeps LLaVA's rest
    pivot = TINY_MODELS["llava-chat"](tmp_path / "pivot")
    proc = load_processor(EngineConfig.model_validate({"model": str(pivot), "data": {"build": "b"}}))
    unknown = proc.tokenizer.unk_token_id
    ids = proc.tokenizer("Describe the image in detail: the foreground, the background", add_special_tokens=False)
    assert unknown not in ids["input_ids"]  # the fusion prompt's words are in its vocabulary
