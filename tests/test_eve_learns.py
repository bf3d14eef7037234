"""EVE learns something only the pixels carry: the colour of a shape.

Synthetic set: a filled square or circle in one of four colours (balanced) on a dark uniform
background of random grey and size; the colour appears nowhere but in the pixels. Stage 1 is
skipped (no data), stage 2 (everything trains, plain template, PAL on) reads the captions
"a <colour> <shape>", stage 3 (SFT, vicuna_v1) the question "<image>\\nwhat colour is the shape?"
answered "<colour>", both through `train_eve` on the core's `fit`, with a tiny Llama and a tiny
CLIP teacher. On held-out images, greedy answers of the saved final model must reach at least twice
the majority baseline (25%: four balanced colours). Control: every held-out image with its shape
removed (the same background and size) must fall back to chance: accuracy against the same
held-out labels at most the majority baseline plus 15 points, i.e. the answers came from the shape's
pixels, not from the background, the image size or the prompt.

The recipe is the paper's form (AdamW, wd 0, cosine, warm-up 0.03) with learning rates and epochs
for a model of 120k random parameters (the paper's 4e-5 / 2e-5 and one epoch are for a pretrained
7B on millions of samples): stage 2 lr 3e-3 for 2 epochs, stage 3 lr 1e-3 for 1, 640 training
images, batches of 16. Two seeds run (model init, data and held-out set all change with it); seeds
0-5 all passed with held-out accuracy 0.99-1.00 and blank accuracy 0.20-0.25, about 15-20 s each on
a loaded 2-core machine. Run with `-s` to see the figures.
"""
from __future__ import annotations

import json
import random
import time
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from eve_helpers import COLOURS, IMAGE, PAL, PEL, one_thread, png, write_json  # noqa: F401

pytestmark = pytest.mark.heavy

QUESTION = "what colour is the shape?"
NAMES = sorted(COLOURS)  # blue green red white
TRAIN, HELD_OUT = 640, 96
SLACK = 0.15


def scene(rng: random.Random, colour: str) -> tuple[Image.Image, Image.Image, str]:
    """(image with the shape, the same background without it, shape name)."""
    w, h = rng.randint(16, 40), rng.randint(16, 40)
    bg = (rng.randint(0, 40),) * 3
    shape = rng.choice(["square", "circle"])
    blank = Image.new("RGB", (w, h), bg)
    im = blank.copy()
    r = min(w, h) // 3
    cx, cy = rng.randint(r, w - r), rng.randint(r, h - r)
    draw = ImageDraw.Draw(im)
    (draw.rectangle if shape == "square" else draw.ellipse)((cx - r, cy - r, cx + r, cy + r), fill=COLOURS[colour])
    return im, blank, shape


def dataset(root: Path, n: int, seed: int) -> tuple[Path, Path]:
    """Caption rows (plain) and SFT rows (vicuna_v1) over the same n balanced images."""
    rng = random.Random(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    caps, sft = [], []
    for i in range(n):
        colour = NAMES[i % len(NAMES)]
        im, _, shape = scene(rng, colour)
        (root / "images" / f"{i}.png").write_bytes(png(im))
        caps.append({"id": f"c{i}", "image": f"images/{i}.png",
                     "conversations": [{"from": "human", "value": "<image>"},
                                       {"from": "gpt", "value": f"a {colour} {shape}"}]})
        sft.append({"id": f"q{i}", "image": f"images/{i}.png",
                    "conversations": [{"from": "human", "value": f"<image>\n{QUESTION}"},
                                      {"from": "gpt", "value": colour}]})
    return write_json(root / "captions.json", caps), write_json(root / "sft.json", sft)


def held_out(n: int, seed: int) -> list[tuple[Image.Image, Image.Image, str]]:
    rng = random.Random(10_000 + seed)  # images never trained on
    order = [NAMES[i % len(NAMES)] for i in range(n)]
    rng.shuffle(order)
    return [(*scene(rng, c)[:2], c) for c in order]


def config(tmp: Path, seed: int):
    from fusionweave.experts.tiny_models import make_tiny_llm, make_tiny_vision_teacher
    from fusionweave.trainers.eve.method import EveConfig

    llm = make_tiny_llm(tmp / "llm", words=["square", "circle", "colour", "shape"], seed=seed)
    teacher = make_tiny_vision_teacher(tmp / "teacher", seed=seed)
    captions, sft = dataset(tmp / "data", TRAIN, seed)

    def stage(path: Path, lr: float, epochs: int) -> dict:
        return {"data": {"conversations": [{"path": path, "image_root": tmp / "data"}], "batch_size": 16,
                         "workers": 0},
                "recipe": {"lr": lr, "epochs": epochs, "seed": seed, "device": "cpu"}}

    return EveConfig(llm=llm, teacher=teacher, image=IMAGE, pel=PEL, pal=PAL,
                     stage2=stage(captions, 3e-3, 2), stage3=stage(sft, 1e-3, 1))


def answer(model, image: Image.Image) -> str:
    words = model.generate(image, QUESTION, max_new_tokens=2).split()
    return words[0] if words else ""


@pytest.mark.parametrize("seed", [0, 1])
def test_eve_learns_the_colour_from_the_pixels(tmp_path: Path, seed: int) -> None:
    from fusionweave.trainers.eve.model import EveModel
    from fusionweave.trainers.eve.train import train_eve

    t0 = time.perf_counter()
    cfg = config(tmp_path, seed)
    report = train_eve(cfg, tmp_path / "run", progress=False)
    assert report["stage1"]["status"] == "skipped (no data)"
    assert report["stage2"]["status"] == report["stage3"]["status"] == "trained"
    trained = time.perf_counter() - t0
    model = EveModel.from_pretrained(report["model"]).eval()
    tests = held_out(HELD_OUT, seed)
    labels = [c for _, _, c in tests]
    majority = max(labels.count(c) for c in NAMES) / len(labels)
    on_shape = [answer(model, im) for im, _, _ in tests]
    on_blank = [answer(model, blank) for _, blank, _ in tests]
    acc = sum(a == c for a, c in zip(on_shape, labels)) / len(labels)
    blank_acc = sum(a == c for a, c in zip(on_blank, labels)) / len(labels)
    steps = [json.loads(x) for x in (tmp_path / "run" / "stage3" / "steps.jsonl").read_text().splitlines()]
    figures = {"seed": seed, "held_out_accuracy": round(acc, 3), "majority_baseline": round(majority, 3),
               "blank_accuracy": round(blank_acc, 3),
               "blank_answers": {a: on_blank.count(a) for a in sorted(set(on_blank))},
               "stage3_ce_first_last": [round(steps[0]["ce"], 3), round(steps[-1]["ce"], 3)],
               "train_s": round(trained, 1), "total_s": round(time.perf_counter() - t0, 1)}
    print("EVE learns:", json.dumps(figures))
    assert acc >= 2 * majority, figures
    assert blank_acc <= majority + SLACK, figures
