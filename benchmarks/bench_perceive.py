"""The perceive stage per expert on Ray vs the bare model loop on the same batches.

ours: `pipelines.perceive.stage.run` with one expert enabled (the open-vocabulary detector with
      the tagger it needs), on the embedded Ray engine (2 CPUs): reads the shards, runs the chain
      (CPU prepare tasks, the model as an actor pool), writes shards with experts.json.
bare: the same expert objects in one process (`run_chain_locally`: setup, then prepare and
      forward on every batch) over the same batches read from the same shards, nothing written.
Both use the same threads per model (`threads`). Tiny random models (their size is what makes
pipeline overhead visible). RapidOCR is the real PP-OCRv4 pipeline: its images/s is reported.

    python benchmarks/bench_perceive.py --images 96
    python benchmarks/bench_perceive.py --models real --images 16 --per-shard 4 --batch 4   # real sizes
"""
from __future__ import annotations

import argparse
import io
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import Result, emit, model_stage_goal, parse  # noqa: E402
from fusionweave.experts.base import run_chain_locally  # noqa: E402
from fusionweave.experts.expert import result_column  # noqa: E402
from fusionweave.experts.tiny_models import make_tiny_clip_pair, make_tiny_depth, make_tiny_owlv2  # noqa: E402
from fusionweave.orchestration.ray_engine import RayEngine  # noqa: E402
from fusionweave.pipelines.perceive import stage  # noqa: E402
from fusionweave.pipelines.runner import run_stage  # noqa: E402
from fusionweave.pipelines.perceive.chain import build_chain, build_experts  # noqa: E402
from fusionweave.pipelines.perceive.config import PerceiveConfig  # noqa: E402
from fusionweave.pipelines.select.inputs import plan_parts  # noqa: E402
from fusionweave.pipelines.storage.shard_sink import write_shard  # noqa: E402
from fusionweave.pipelines.storage.shard_source import iter_image_samples  # noqa: E402

TAGS = ["person", "dog", "cat", "car", "tree", "sign", "building", "sky", "road", "bicycle"]


def make_shards(folder: Path, images: int, per_shard: int) -> None:
    if folder.exists():
        return
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    font = ImageFont.load_default(size=36)
    samples = []
    for i in range(images):
        img = Image.new("RGB", (640, 480), tuple(int(c) for c in rng.integers(0, 256, 3)))
        d = ImageDraw.Draw(img)
        for _ in range(3):
            x, y = (int(v) for v in rng.integers(0, 500, 2))
            d.rectangle((x, y, x + 120, y + 90), fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
        d.text((40, 400), f"SHOP {i:04d}", fill=(0, 0, 0), font=font)
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=90)
        samples.append({"__key__": f"img{i:05d}", "jpg": buf.getvalue(), "json": {"key": f"img{i:05d}"}})
    for s in range(0, images, per_shard):
        write_shard(folder / f"in-{s // per_shard:04d}.tar", samples[s:s + per_shard])


def configs(models: Path, threads: int, batch: int, real: bool = False) -> dict[str, dict]:
    res = {"threads": threads, "batch_size": batch, "num_cpus": 0.5}  # whole-CPU actors starve the reads on 2 cores
    tagger = {"model": str(models / "clip"), "vocabulary": str(models / "tags.txt"), "threshold": 0.0, "top_k": 5,
              **res}
    off = {"enabled": False}
    base = {"tagger": off, "detector": off, "ovd": off, "ocr": off, "depth": off}
    return {
        "tagger": {**base, "tagger": tagger},
        "detector": {**base, "detector": {"model": "yolov8x.yaml" if real else "yolov8n.yaml", "confidence": 0.01,
                                          "image_size": 640 if real else 320, **res}},
        "ovd": {**base, "tagger": tagger, "ovd": {"model": str(models / "owl"), "confidence": 0.1, **res}},
        "ocr": {**base, "ocr": {"min_confidence": 0.5, **res}},
        "depth": {**base, "depth": {"model": str(models / "depth"), **res}},
    }


REAL = {"tagger": "CLIP ViT-B/16", "detector": "YOLOv8x", "ovd": "OWLv2-base/16 + CLIP ViT-B/16 tagger",
        "ocr": "RapidOCR PP-OCRv4, real weights", "depth": "Depth Anything small"}


def make_models(models: Path, kind: str, owl_side: int) -> Path:
    """The tagger's CLIP, OWLv2 and the depth model, once per kind (and OWLv2 side)."""
    from benchmarks import real_size_models as real

    if not (models / "done").exists():
        models.mkdir(parents=True, exist_ok=True)
        (models / "tags.txt").write_text("\n".join(TAGS))
        if kind == "tiny":
            make_tiny_clip_pair(models / "clip", TAGS)
            make_tiny_owlv2(models / "owl", TAGS)
            make_tiny_depth(models / "depth")
        else:
            real.make_clip_b16(models / "clip", TAGS)
            real.make_owlv2_base(models / "owl", TAGS, owl_side)
            real.make_depth_small(models / "depth")
        (models / "done").write_text(kind)
    return models


def model_seconds(steps: dict[str, dict], experts: list[str]) -> float:
    """Seconds the experts' predict calls took, from the stage's per-step statistics."""
    return sum(steps[name]["seconds"] for name in experts if name in steps)


def bare(cfg: PerceiveConfig, parts: list[dict]) -> tuple[float, float]:
    """(wall seconds, seconds inside the experts' predict calls)."""
    experts = build_experts(cfg)
    chain = build_chain(experts, cfg.boxes)
    t0 = time.perf_counter()
    batches = []
    for p in parts:
        items = [s for s in iter_image_samples(p["input"]) if not isinstance(s, dict)]
        for i in range(0, len(items), cfg.chunk_size):
            batches.append(stage.to_batch(items[i:i + cfg.chunk_size], []))
    out = run_chain_locally(chain, batches)
    wall = time.perf_counter() - t0
    predict = sum(json.loads(c)["seconds"] for b in out for e in experts for c in b[result_column(e.name)])
    return wall, predict


def ours(cfg: PerceiveConfig, parts: list[dict], out: Path, engine: RayEngine) -> tuple[float, float]:
    """(wall seconds, seconds inside the experts' predict calls, summed over the actors)."""
    shutil.rmtree(out, ignore_errors=True)
    experts = build_experts(cfg)
    t0 = time.perf_counter()
    st = run_stage(engine, out, stage.stage(cfg, out, parts, experts))
    wall = time.perf_counter() - t0
    assert st["balanced"] and not st["expert_errors"], st
    return wall, model_seconds(st["steps"], [e.name for e in experts])


def run_args() -> argparse.ArgumentParser:
    """The data and worker settings every perceive benchmark takes."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=96)
    ap.add_argument("--per-shard", type=int, default=24)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=1,
                    help="runs of each side, in turns (ours, bare, ours, ...); the best of each is compared")
    return ap


CI_SIZES = {"ci": {"images": 8, "per_shard": 4, "batch": 4}}


def side_by_side(name: str, compares: str, cfg: PerceiveConfig, parts: list[dict], work: Path, engine: RayEngine,
                 images: int, goal: str | None = ">= 0.9", rounds: int = 1) -> Result:
    """One expert's stage run vs its bare loop, after a warm-up run on the first part (worker
    start-up and the first load of the model files are not the comparison). With `rounds` > 1 the
    sides take turns and the best of each counts: a slow spell of a shared machine then hits both.
    The details split each side's time into the experts' predict calls and the rest, which is
    where a gap comes from: the pipeline (the rest) or the forward itself running slower."""
    ours(cfg, parts[:1], work / "warm", engine)
    runs = {"ours": [], "bare": []}
    for _ in range(rounds):
        runs["ours"].append(ours(cfg, parts, work / "out", engine))
        runs["bare"].append(bare(cfg, parts))
    best = {side: min(r) for side, r in runs.items()}  # (wall, predict) of the fastest run
    details = {f"{side}_s": round(best[side][0], 3) for side in best}
    details.update({f"{side}_predict_s": round(best[side][1], 3) for side in best})
    if rounds > 1:
        details.update({f"{side}_runs_s": [round(w, 2) for w, _ in r] for side, r in runs.items()})
    return Result(name, compares + (f", best of {rounds} in turns" if rounds > 1 else ""), images / best["ours"][0],
                  images / best["bare"][0], "images/s", goal, details)


def main() -> None:
    ap = run_args()
    ap.add_argument("--only", nargs="*", default=None)
    ap.add_argument("--models", choices=["tiny", "real"], default="tiny",
                    help="tiny random models (the stage's fixed costs) or real architectures at their real sizes")
    ap.add_argument("--owl-side", type=int, default=480, help="OWLv2's input side with --models real (the original: 960)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/fusionweave-bench-perceive"))
    args = parse(ap, CI_SIZES)
    models = make_models(args.work / (f"models-real-{args.owl_side}" if args.models == "real" else "models-tiny"),
                         args.models, args.owl_side)
    shards = args.work / f"shards-{args.images}-{args.per_shard}"  # made once per size
    make_shards(shards, args.images, args.per_shard)
    parts = plan_parts([shards])
    results = []
    with RayEngine(num_cpus=2, progress=False) as engine:
        for name, data in configs(models, args.threads, args.batch, args.models == "real").items():
            if args.only and name not in args.only:
                continue
            cfg = PerceiveConfig.model_validate({**data, "chunk_size": args.batch})
            what = "tiny random model" if args.models == "tiny" else f"{REAL[name]}, random weights"
            label = f"perceive/{name}" + (", real size" if args.models == "real" else "")
            results.append(side_by_side(label, f"perceive stage on Ray, {name} only ({what}) "
                                        f"vs the bare expert loop, {args.images} images 640x480", cfg, parts,
                                        args.work, engine, args.images, model_stage_goal(args.models),
                                        args.rounds))
    emit(results, args)


if __name__ == "__main__":
    main()
