"""Continual training over MCL: the stage manifest a `fusionweave build mcl` writes
(`mcl_export/stages.json`) becomes, per stage, a resumable mixture of the stage's training sources
at their configured ratios, plus a stream per eval set of every modality seen so far."""
from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fusionweave.trainers.stream import CorruptSample, Mixture, ResumableLoader, Sample, ShardStream, decode_sample
from fusionweave.transforms.image_validate import open_image

MANIFEST = Path("mcl_export") / "stages.json"
FORMAT = "fusionweave.mcl-stages/1"
FRAME = re.compile(r"^f(\d+)\.jpg$")


@dataclass(frozen=True)
class Stage:
    index: int
    modality: str
    train: list[dict[str, Any]]  # source, ratio, shards, samples, ...
    eval: list[dict[str, Any]]
    evaluate_after: list[str]


def load_stages(build: str | Path) -> list[Stage]:
    path = Path(build) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no MCL stage manifest (run `fusionweave build mcl` first)")
    m = json.loads(path.read_text())
    if m.get("format") != FORMAT:
        raise ValueError(f"{path}: format {m.get('format')!r}, expected {FORMAT!r}")
    return [Stage(s["stage"], s["modality"], s["train"], s["eval"], s["evaluate_after"]) for s in m["stages"]]


def decode_mcl(raw: Sample) -> Sample:
    """decode_sample, plus MCL's members: video frames `f0.jpg..` -> `frames` (T, 3, H, W) uint8,
    `depth.png` -> (H, W) int32 (16-bit depth), `fbank.npy` and point `npy` -> arrays."""
    import torch

    frames = sorted((int(FRAME.match(k).group(1)), k) for k in raw if FRAME.match(k))
    depth = raw.get("depth.png")
    rest = {k: v for k, v in raw.items() if not FRAME.match(k) and k != "depth.png"}
    out = decode_sample(rest)
    try:
        if frames:
            arrs = []
            for _, k in frames:
                with open_image(raw[k]) as im:
                    arrs.append(np.asarray(im.convert("RGB")))
            out["frames"] = torch.from_numpy(np.stack(arrs)).permute(0, 3, 1, 2).contiguous()
        if depth is not None:
            with open_image(depth) as im:
                out["depth"] = torch.from_numpy(np.asarray(im, dtype=np.int32))
    except Exception as err:  # noqa: BLE001 - the sample's failure, counted and skipped by the stream
        raise CorruptSample(f"{raw['__key__']}: frames or depth: {type(err).__name__}: {err}") from None
    return out


def paired_flip_crop(rgb: Any, depth: Any, rng: random.Random, min_scale: float = 0.8) -> tuple[Any, Any]:
    """One random crop (a `min_scale`..1 fraction of each side) and horizontal flip applied to an
    RGB image (C, H, W) and its depth map (H, W) identically, so depth stays aligned with the pixels."""
    h, w = depth.shape[-2:]
    ch, cw = max(1, round(h * rng.uniform(min_scale, 1.0))), max(1, round(w * rng.uniform(min_scale, 1.0)))
    y, x = rng.randint(0, h - ch), rng.randint(0, w - cw)
    rgb, depth = rgb[..., y:y + ch, x:x + cw], depth[..., y:y + ch, x:x + cw]
    if rng.random() < 0.5:
        rgb, depth = rgb.flip(-1), depth.flip(-1)
    return rgb, depth


def collate_records(samples: list[Sample]) -> dict[str, Any]:
    """Stack what stacks (frames, fbank chunks, points); keep images and records as lists."""
    import torch

    out: dict[str, Any] = {}
    for k in samples[0]:
        vals = [s.get(k) for s in samples]
        if all(isinstance(v, np.ndarray) for v in vals) and len({v.shape for v in vals}) == 1:
            out[k] = torch.from_numpy(np.stack(vals))
        elif all(isinstance(v, torch.Tensor) for v in vals) and len({tuple(v.shape) for v in vals}) == 1:
            out[k] = torch.stack(vals)
        else:
            out[k] = vals
    return out


def stream(build: str | Path, shards: list[str], batch_size: int, **kwargs: Any) -> ShardStream:
    return ShardStream([Path(build) / s for s in shards], batch_size, decode=decode_mcl,
                       collate_fn=collate_records, **kwargs)


def stage_mixture(build: str | Path, stage: Stage, batch_size: int, seed: int = 0, **kwargs: Any) -> Mixture:
    """Batches of the stage's training sources, each drawn with its ratio (iteration-based)."""
    srcs = [t for t in stage.train if t["shards"] and t["ratio"] > 0]
    if not srcs:
        raise ValueError(f"stage {stage.index} ({stage.modality}) has no training shards")
    loaders = [ResumableLoader(stream(build, t["shards"], batch_size, seed=seed, **kwargs)) for t in srcs]
    return Mixture(loaders, [t["ratio"] for t in srcs], seed=seed)


def eval_sets(build: str | Path, stages: list[Stage], upto: int) -> dict[str, dict[str, Any]]:
    """After stage `upto`: every eval set of every modality learned so far, by source name."""
    seen = set(stages[upto].evaluate_after)
    return {e["source"]: {**e, "modality": s.modality} for s in stages if s.modality in seen for e in s.eval
            if e["shards"]}
