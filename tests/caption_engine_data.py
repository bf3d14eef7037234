"""A synthetic teacher seed set in which each caption needs both sources the DenseFusion engine
fuses: the square's colour is only in the pixels, and the sign's word is only in the priors (its
OCR string: the sign is a few pixels, unreadable at the model's resolution). Rows are LLaVA
conversations with the real engine prompt (transforms.prompts), as the teacher_export stage
writes them, plus perceive-style shards holding each image's experts.json."""
from __future__ import annotations

import io
import json
import random
from pathlib import Path

import numpy as np
from PIL import Image

from fusionweave.transforms.prompts import Priors, Template, fit

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220), "yellow": (230, 220, 30)}
WORDS = ("zorb quix plam vent krel dusk mobo tarn").split()


def caption(colour: str, word: str) -> str:
    return f"a {colour} square with a small sign . the sign reads {word} ."


def image(colour: str | None, rng: random.Random) -> bytes:
    """A square of `colour` (grey when None: the blanked image) with a 2-pixel 'sign' in a corner."""
    rgb = COLOURS[colour] if colour else (128, 128, 128)
    arr = np.zeros((32, 32, 3), np.uint8) + np.array(rgb, np.uint8)
    noise = np.random.default_rng(rng.randrange(1 << 30)).integers(-12, 13, arr.shape)
    arr = np.clip(arr.astype(int) + noise, 0, 255).astype(np.uint8)
    arr[1:3, 1:3] = 255
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


def experts(word: str) -> dict:
    return {"schema": "fusionweave.experts/1", "experts": {
        "tagger": {"results": [{"tag": "square", "score": 0.9}], "error": None},
        "ocr": {"results": [{"text": w, "box": [0.03, 0.03, 0.09, 0.09], "score": 0.95} for w in [word]],
                "error": None}},
        "detections": [{"label": "sign", "box": [0.03, 0.03, 0.09, 0.09], "score": 0.8}]}


# a short wording of the engine prompt (densefusion.template), so the CPU test trains on short sequences
TEMPLATE = """engine:
  instruction: Describe the image in detail.
  external_header: "External information:"
  sections: ["Tags: {tags}", "OCR:\n{ocr}"]
  image: "<image>"
teacher:
  instruction: Describe the image in detail.
  sections: ["OCR:\n{ocr}"]
  image: "<image>"
"""


def template(root: Path) -> Path:
    (root / "prompts.yaml").write_text(TEMPLATE)
    return root / "prompts.yaml"


def prompt(ex: dict | None, path: Path) -> str:
    """The engine prompt the densefusion build writes with this template (image placeholder excluded)."""
    return fit(Template.load(path, "engine"), Priors.from_experts(ex, ""), 1024, with_image=False)[0]


def vocabulary() -> list[str]:
    return ["describe the image in detail external information tags ocr photo square small sign", *COLOURS, *WORDS]


def make_set(root: Path, n: int, seed: int = 0) -> dict:
    """`root/teacher_sft.json` (+ images under root/images) and `root/perceive/*.tar`."""
    from fusionweave.pipelines.storage.shard_sink import write_shard

    rng = random.Random(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    tpl = template(root)
    rows, samples = [], []
    for i in range(n):
        colour, word = rng.choice(list(COLOURS)), rng.choice(WORDS)
        key = f"img{i:05d}"
        data = image(colour, rng)
        (root / "images" / f"{key}.png").write_bytes(data)
        ex = experts(word)
        rows.append({"id": key, "image": f"images/{key}.png", "colour": colour, "word": word,
                     "conversations": [{"from": "human", "value": "<image>\n" + prompt(ex, tpl)},
                                       {"from": "gpt", "value": caption(colour, word)}]})
        samples.append({"__key__": key, "png": data, "experts.json": ex, "json": {"key": key}})
    (root / "teacher_sft.json").write_text(json.dumps(rows, indent=1))
    (root / "perceive").mkdir(exist_ok=True)
    write_shard(root / "perceive" / "shard-000000.tar", samples)
    return {"sft": root / "teacher_sft.json", "root": root, "template": tpl, "perceive": root / "perceive", "rows": rows}


def tiny_pivot(root: Path, hidden: int = 64, layers: int = 2) -> Path:
    """A tiny LLaVA (CLIP tower, projector, Llama) whose tokenizer knows the set's words."""
    from fusionweave.experts.tiny_models import make_tiny_llava

    return make_tiny_llava(root, image_size=32, words=vocabulary(), hidden=hidden, layers=layers, patch=16, tie=False)


def engine_config(model: Path, sft: Path, **over: object) -> dict:
    """A CPU recipe for the tiny pivot (the paper's lr 2e-5 is for a 7B)."""
    cfg: dict = {"model": str(model), "data": {"sft": str(sft), "batch_size": 8},
                 "recipe": {"lr": 3e-3, "epochs": 1, "warmup_ratio": 0.0, "device": "cpu"}}
    for k, v in over.items():
        cfg[k] = {**cfg[k], **v} if isinstance(v, dict) and isinstance(cfg.get(k), dict) else v
    return cfg
