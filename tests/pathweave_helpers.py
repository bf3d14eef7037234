"""Tiny models and a tiny config for `train pathweave` tests on the closed-answer MCL sources."""
from __future__ import annotations

from pathlib import Path

import yaml

MODALITIES = ("image", "video", "audio", "depth", "pointcloud")
KIND = {"image": "vision", "video": "vision", "audio": "audio", "depth": "vision", "pointcloud": "points"}


def tiny_models(root: Path) -> dict[str, Path]:
    from fusionweave.experts.tiny_models import make_tiny_encoder, make_tiny_llm
    from fusionweave.pipelines.fixtures.sample_mcl_closed import WORDS

    paths = {"llm": make_tiny_llm(root / "llm", words=WORDS, layers=2, init_range=0.3, intermediate=512)}
    for m in MODALITIES:
        paths[m] = make_tiny_encoder(root / f"{m}-encoder", m)
    return paths


def tiny_models_of(root: Path) -> dict[str, Path]:
    """The folders `tiny_models(root)` wrote."""
    return {"llm": root / "llm", **{m: root / f"{m}-encoder" for m in MODALITIES}}


def tiny_config(path: Path, build: Path, models: dict[str, Path], stage_steps: int = 250, **method: object) -> Path:
    from fusionweave.pipelines.fixtures.sample_mcl_closed import QUESTIONS

    cfg = {
        "build": str(build), "seed": 0,
        "model": {"llm": str(models["llm"]),
                  "encoders": {m: {"kind": KIND[m], "model": str(models[m])} for m in MODALITIES},
                  "bridge": {"hidden": 32, "layers": 2, "heads": 2, "intermediate": 64, "queries": 8,
                             "cross_every": 1},
                  "bottleneck": 8, "image_lr": 1e-2},
        # video (motion from 5 frames) needs the most steps of the four
        "method": {"steps": {"image": 120, **{m: stage_steps for m in MODALITIES[1:]}, "video": 400}, "batch_size": 8,
                   **method},
        "eval": {"batch_size": 32, "num_beams": 1, "answer": {"min_new_tokens": 1, "max_new_tokens": 2},
                 "cls_prompt": {"depth": QUESTIONS["depth"], "pointcloud": QUESTIONS["pointcloud"]}},
        "recipe": {"lr": 2e-2, "weight_decay": 0.0, "schedule": "constant", "grad_clip": 1.0, "save_every": 50},
    }
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path
