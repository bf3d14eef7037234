"""Shared pieces of the EVE tests: tiny models, synthetic shape images and data files."""
from __future__ import annotations

import io
import json
import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from fusionweave.trainers.eve.config import ImageConfig, PalConfig, PelConfig

IMAGE = ImageConfig(max_side=32, patch=4)  # grids up to 4 x 4: 21 tokens
PEL = PelConfig(width=32, heads=4)
PAL = PalConfig(every=1, layers=2, heads=4)
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220), "white": (240, 240, 240)}


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny matrices: one torch thread is several times faster than two fighting over a shared
    machine (import this fixture into a test module to use it there)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_models(root: Path) -> tuple[Path, Path]:
    from fusionweave.experts.tiny_models import make_tiny_llm, make_tiny_vision_teacher

    llm, teacher = root / "llm", root / "teacher"
    if not llm.exists():
        make_tiny_llm(llm, words=["square", "circle"])
        make_tiny_vision_teacher(teacher)
    return llm, teacher


def build(llm: Path, teacher: Path, template: str = "plain", pal_weight: float = 1.0):
    from fusionweave.trainers.eve.model import EveModel

    return EveModel.build(llm, teacher, IMAGE, PEL, PAL, template, pal_weight)


def shape_image(rng: random.Random, size: tuple[int, int] | None = None) -> tuple[Image.Image, str]:
    """A filled square or circle of one colour on a dark background, and its caption."""
    w, h = size or (rng.randint(16, 48), rng.randint(16, 48))
    im = Image.new("RGB", (w, h), (rng.randint(0, 40),) * 3)
    colour, shape = rng.choice(sorted(COLOURS)), rng.choice(["square", "circle"])
    r = min(w, h) // 3
    cx, cy = rng.randint(r, w - r), rng.randint(r, h - r)
    box = (cx - r, cy - r, cx + r, cy + r)
    (ImageDraw.Draw(im).rectangle if shape == "square" else ImageDraw.Draw(im).ellipse)(box, fill=COLOURS[colour])
    return im, f"a {colour} {shape}"


def png(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def noise(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def llava_rows(root: Path, n: int, seed: int = 0, human: str = "<image>") -> list[dict]:
    """`n` LLaVA rows whose images are written under root/images."""
    rng = random.Random(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        im, cap = shape_image(rng)
        (root / "images" / f"{i}.png").write_bytes(png(im))
        rows.append({"id": f"r{i}", "image": f"images/{i}.png",
                     "conversations": [{"from": "human", "value": human}, {"from": "gpt", "value": cap}]})
    return rows


def write_json(path: Path, rows: list) -> Path:
    path.write_text(json.dumps(rows))
    return path
