"""Captioning: the densefusion `caption` stage vs bare loops on the same images and prompts.

transformers: the stage on Ray (read shards, build fusion prompts, the captioner as an actor
              pool, QC, write shards) vs `TransformersCaptioner.generate` called bare on the same
              batches in one process (same tiny LLaVA, greedy, same max_new_tokens, 1 thread).
openai:       the stage with the `openai` captioner vs a bare httpx loop (a thread pool posting the
              same chat-completions bodies, same concurrency), both against one loopback server
              backed by the tiny LLaVA (tests/chat_server.py). A fresh cache for every run.

    python benchmarks/bench_caption.py --images 96
    python benchmarks/bench_caption.py --models real --images 16 --per-shard 4 --batch 4 --max-new-tokens 16
"""
from __future__ import annotations

import argparse
import io
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import Result, emit, model_stage_goal, parse  # noqa: E402
from fusionweave.experts.base import Resources  # noqa: E402
from fusionweave.experts.captioners import TransformersCaptioner  # noqa: E402
from fusionweave.experts.openai_captioner import OpenAICaptioner  # noqa: E402
from fusionweave.experts.pixels import decode_rgb  # noqa: E402
from fusionweave.experts.tiny_models import make_tiny_llava  # noqa: E402
from fusionweave.orchestration.ray_engine import RayEngine  # noqa: E402
from fusionweave.pipelines.densefusion import caption  # noqa: E402
from fusionweave.pipelines.runner import run_stage  # noqa: E402
from fusionweave.pipelines.select.inputs import plan_parts  # noqa: E402
from fusionweave.pipelines.storage.shard_sink import write_shard  # noqa: E402
from fusionweave.pipelines.storage.shard_source import iter_image_samples  # noqa: E402
from tests.chat_server import ChatServer  # noqa: E402
from fusionweave.transforms.caption_qc import QcPolicy  # noqa: E402
from fusionweave.transforms.prompts import Template  # noqa: E402


def make_shards(folder: Path, images: int, per_shard: int) -> None:
    if folder.exists():
        return
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    samples = []
    for i in range(images):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)).save(buf, "JPEG")
        experts = {"experts": {"tagger": {"results": [{"tag": "dog", "score": 0.9}], "error": None}},
                   "detections": [{"label": "dog", "box": [0.1, 0.2, 0.5, 0.6], "score": 0.8}]}
        samples.append({"__key__": f"img{i:05d}", "jpg": buf.getvalue(), "txt": f"a dog {i}",
                        "json": {"url": f"http://example.test/{i}.jpg"}, "experts.json": experts})
    for s in range(0, images, per_shard):
        write_shard(folder / f"in-{s // per_shard:04d}.tar", samples[s:s + per_shard])


def batches(parts: list[dict], template: Template, size: int) -> list[dict]:
    to_batch = caption.make_to_batch(template, 1024, None)
    items = [s for p in parts for s in iter_image_samples(p["input"]) if not isinstance(s, dict)]
    return [to_batch(items[i:i + size], []) for i in range(0, len(items), size)]


def stage(out: Path, engine: RayEngine, parts: list[dict], captioner, template: Template, size: int) -> float:
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    st = run_stage(engine, out, caption.stage("caption", out, parts, captioner, template, 1024,
                                              QcPolicy(repetition="flag"), size, 0.5))
    assert st["balanced"] and st["rejected"] == 0, st
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=96)
    ap.add_argument("--per-shard", type=int, default=24)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--requests", type=int, default=8, help="openai: requests in flight")
    ap.add_argument("--models", choices=["tiny", "real"], default="tiny",
                    help="the tiny random LLaVA or a 0.5B-class LLaVA (CLIP ViT-B/16 + Qwen2-0.5B) with random weights")
    ap.add_argument("--work", type=Path, default=Path("/tmp/fusionweave-bench-caption"))
    args = parse(ap, {"ci": {"images": 8, "per_shard": 4, "batch": 4, "max_new_tokens": 8}})
    results = []
    model = args.work / f"llava-{args.models}"
    if not (model / "config.json").exists():
        from benchmarks.real_size_models import make_llava_05b

        (make_tiny_llava if args.models == "tiny" else make_llava_05b)(model)
    shards = args.work / f"shards-{args.images}-{args.per_shard}"  # made once per size
    make_shards(shards, args.images, args.per_shard)
    parts = plan_parts([shards])
    template = Template.load()
    res = Resources(num_cpus=0.5, batch_size=args.batch, threads=1)
    with RayEngine(num_cpus=2, progress=False) as engine:
        cap = TransformersCaptioner(str(model), resources=res, max_new_tokens=args.max_new_tokens)
        stage(args.work / "warm", engine, parts, cap, template, args.batch)
        ours = stage(args.work / "out", engine, parts, cap, template, args.batch)
        bare_cap = TransformersCaptioner(str(model), resources=res, max_new_tokens=args.max_new_tokens)
        t0 = time.perf_counter()
        bare_cap.setup()
        for b in batches(parts, template, args.batch):
            bare_cap.generate([decode_rgb(x) for x in b["image"]], list(b["prompt"]))
        bare = time.perf_counter() - t0
        what = "tiny random LLaVA" if args.models == "tiny" else "0.5B LLaVA, random weights"
        label = "caption/transformers" + (", real size" if args.models == "real" else "")
        results.append(Result(label, f"caption stage on Ray ({what}, {args.max_new_tokens} "
                              f"new tokens) vs bare TransformersCaptioner.generate, {args.images} images",
                              args.images / ours, args.images / bare, "captions/s", model_stage_goal(args.models)))

        with ChatServer(str(model), max_new_tokens=args.max_new_tokens) as srv:
            def openai(cache: str) -> OpenAICaptioner:
                return OpenAICaptioner(srv.base_url, "tiny", args.work / cache, res, None, args.max_new_tokens,
                                       concurrency=args.requests)

            for c in args.work.glob("cache-*.sqlite*"):
                c.unlink()
            stage(args.work / "warm-o", engine, parts, openai("cache-warm.sqlite"), template, args.batch)
            ours = stage(args.work / "out-o", engine, parts, openai("cache-run.sqlite"), template, args.batch)
            bodies = [openai("unused.sqlite").body(p, bytes(img)) for b in batches(parts, template, args.batch)
                      for p, img in zip(b["prompt"], b["image"])]
            import httpx

            t0 = time.perf_counter()
            with httpx.Client(base_url=srv.base_url, timeout=120) as client, ThreadPoolExecutor(args.requests) as pool:
                replies = list(pool.map(lambda body: client.post("/chat/completions", json=body).json(), bodies))
            bare = time.perf_counter() - t0
            assert all(r["choices"][0]["message"]["content"] is not None for r in replies)
            results.append(Result("caption/openai", f"caption stage with the openai captioner vs a bare httpx pool, "
                                  f"{args.requests} in flight, one loopback server, {args.images} images",
                                  args.images / ours, args.images / bare, "captions/s"))
    emit(results, args)


if __name__ == "__main__":
    main()
