"""The engine learns to fuse both sources: after a short CPU SFT of a tiny LLaVA on the synthetic
teacher set (tests/caption_engine_data.py), held-out greedy captions name the square's colour (only
in the pixels) at least twice as often as chance and the sign's word (only in the OCR prior) at
least 80% of the time; with the priors removed from the prompt the word rate falls to about zero,
and with the image blanked the colour rate falls to about chance."""
from __future__ import annotations

import random
from pathlib import Path

import pytest

from tests.caption_engine_data import COLOURS, WORDS, engine_config, image, make_set, prompt, tiny_pivot

pytestmark = pytest.mark.heavy  # a 240-step CPU SFT and three rounds of generation (<= 3 min unloaded)

CHANCE = 1 / len(COLOURS)


def rates(captions: list[str], rows: list[dict]) -> tuple[float, float]:
    colour = sum(r["colour"] in c.split() for c, r in zip(captions, rows)) / len(rows)
    word = sum(r["word"] in c.replace(".", " ").split() for c, r in zip(captions, rows)) / len(rows)
    return colour, word


def test_the_engine_uses_pixels_and_priors(tmp_path: Path) -> None:
    from fusionweave.experts.pixels import decode_rgb
    from fusionweave.trainers.caption_engine.config import EngineConfig
    from fusionweave.trainers.caption_engine.evaluate import evaluate_engine, generate
    from fusionweave.trainers.caption_engine.method import run
    from fusionweave.trainers.core.loop import fit

    data = make_set(tmp_path / "data", 384)
    cfg = engine_config(tiny_pivot(tmp_path / "pivot"), data["sft"], data={"holdout": 64, "batch_size": 16},
                        recipe={"epochs": 12, "lr": 3e-3, "warmup_ratio": 0.05})
    res = run("caption-engine", EngineConfig.model_validate(cfg), tmp_path / "run",
              lambda m, o: fit(m, o, progress=False))
    engine = Path(res["engine"])
    got = evaluate_engine(engine, tmp_path / "run" / "holdout.json", Path("/"), [data["perceive"]], max_new_tokens=16,
                          batch_size=32, run=tmp_path / "run")
    by_id = {r["id"]: r for r in data["rows"]}
    rows = [by_id[s["id"]] for s in got["samples"]]
    colour, word = rates([s["caption"] for s in got["samples"]], rows)
    print(f"held-out: colour {colour:.2f} (chance {CHANCE:.2f}), OCR word {word:.2f}; prior use "
          f"{got['prior_use']}; BLEU-4 {got['bleu4']:.3f} ROUGE-L {got['rouge_l']:.3f} CIDEr {got['cider']:.3f}")
    assert colour >= 2 * CHANCE and word >= 0.8
    assert got["prior_use"]["ocr"] == pytest.approx(word, abs=1e-3)  # the eval's own score agrees

    examples = [{"image": (data["root"] / r["image"]).read_bytes(), "row": r} for r in rows]
    no_priors = generate(engine, examples, 16, 32, prompt=lambda e: prompt(None, data["template"]))[0]
    rng = random.Random(0)
    blank = generate(engine, examples, 16, 32, prompt=lambda e: e["row"]["conversations"][0]["value"].split("\n", 1)[1],
                     image=lambda e: decode_rgb(image(None, rng)))[0]
    word_without_priors = rates(no_priors, rows)[1]
    colour_blank = rates(blank, rows)[0]
    print(f"priors removed: OCR word {word_without_priors:.2f}; image blanked: colour {colour_blank:.2f}")
    # from 1.0 to a guess: without the prior the model can only name some word of the 8 (chance 1/8)
    assert word_without_priors <= 2 / len(WORDS)
    assert colour_blank <= CHANCE + 0.2  # ~chance: the colour comes from the pixels
    assert set(WORDS) >= {r["word"] for r in rows}
