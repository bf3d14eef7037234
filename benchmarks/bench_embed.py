"""Embed images/s: select's `embed` stage on Ray (read shards, CPU decode + resize tasks, the
embedder as an actor pool, side tables written by workers) vs the same `ImageEmbedder` run bare
in one process over the same batches (decode + resize + forward, nothing written), 1 thread per
model, 640x480 JPEGs. `--models real`: a CLIP ViT-B/16 vision tower at its real size (random
weights); tiny: the tests' tiny CLIP (fixed costs only).

    python benchmarks/bench_embed.py [--models tiny|real] [--images 96] [--per-shard 24] [--batch 8]
"""
from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.bench_perceive import TAGS, make_shards, run_args  # noqa: E402
from benchmarks.common import Result, emit, model_stage_goal, parse  # noqa: E402
from fusionweave.experts.base import run_locally  # noqa: E402
from fusionweave.orchestration.ray_engine import RayEngine  # noqa: E402
from fusionweave.pipelines.runner import run_stage  # noqa: E402
from fusionweave.pipelines.select import embed  # noqa: E402
from fusionweave.pipelines.select.config import SelectConfig  # noqa: E402
from fusionweave.pipelines.select.inputs import plan_parts  # noqa: E402
from fusionweave.pipelines.storage.shard_source import iter_image_samples  # noqa: E402


def make_model(work: Path, kind: str) -> Path:
    from benchmarks.real_size_models import make_clip_b16
    from fusionweave.experts.tiny_models import make_tiny_clip

    path = work / f"embedder-{kind}"
    if not (path / "config.json").exists():
        make_clip_b16(path, TAGS) if kind == "real" else make_tiny_clip(path)
    return path


def bare(cfg: SelectConfig, parts: list[dict]) -> float:
    """Decode + resize with the model's own preprocessor, then the forward pass, batch by batch."""
    step = embed.embedder(cfg.embed)
    t0 = time.perf_counter()
    prep = step.preprocessor()
    batches = []
    for p in parts:
        items = [s for s in iter_image_samples(p["input"]) if not isinstance(s, dict)]
        for i in range(0, len(items), cfg.embed.batch_size):
            px, _ = prep([s.members[s.image_ext] for s in items[i:i + cfg.embed.batch_size]])
            batches.append({"pixels": px})
    run_locally(step, batches)
    return time.perf_counter() - t0


def ours(cfg: SelectConfig, parts: list[dict], out: Path, engine: RayEngine) -> float:
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    st = run_stage(engine, out, embed.stage(cfg, out, parts))
    assert st["balanced"] and st["rows_out"] == st["rows_in"], st
    return time.perf_counter() - t0


def main() -> None:
    ap = run_args()
    ap.add_argument("--models", choices=["tiny", "real"], default="tiny")
    ap.add_argument("--work", type=Path, default=Path("/tmp/fusionweave-bench-embed"))
    args = parse(ap, {"ci": {"images": 8, "per_shard": 4, "batch": 4}})
    model = make_model(args.work, args.models)
    shards = args.work / f"shards-{args.images}-{args.per_shard}"
    make_shards(shards, args.images, args.per_shard)
    parts = plan_parts([shards])
    cfg = SelectConfig.model_validate({"input": [str(shards)], "embed": {
        "model": str(model), "batch_size": args.batch, "threads": args.threads, "num_cpus": 0.5}})
    with RayEngine(num_cpus=2, progress=False) as engine:
        ours(cfg, parts, args.work / "warm", engine)  # worker start-up and imports are not the comparison
        t_ours = ours(cfg, parts, args.work / "out", engine)
    t_bare = bare(cfg, parts)
    what = "CLIP ViT-B/16 vision tower, random weights" if args.models == "real" else "tiny random CLIP"
    emit([Result("embed" + (", real size" if args.models == "real" else ""),
                 f"select's embed stage on Ray ({what}) vs the bare embedder loop, {args.images} images 640x480",
                 args.images / t_ours, args.images / t_bare, "images/s", model_stage_goal(args.models),
                 {"ours_s": round(t_ours, 3), "bare_s": round(t_bare, 3)})], args)


if __name__ == "__main__":
    main()
