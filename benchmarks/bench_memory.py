"""Peak memory of a stage when its input grows 10x (goal: flat, within 1.2x).

Runs each build as a subprocess on N and 10*N inputs and samples the summed USS (memory unique to
each process, so shared libraries and Ray's shared-memory object store are not counted once per
worker) of its whole process tree (driver, Ray's daemons and workers) every 200 ms. The baseline
is the same build on the smaller input.
- metadata: `build curate --stages metadata` on LAION rows, the URL dedup shuffled on Ray for
  both sizes (no in-driver grouping of small side tables);
- perceive: `build perceive` with the tagger and the depth expert (tiny random models) on
  640x480 JPEGs;
- caption: `build densefusion --stages caption` with a tiny random LLaVA (transformers, 8 new
  tokens) on the same images.

    python benchmarks/bench_memory.py [--rows 200000] [--images 200] [--stages metadata perceive caption]
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import psutil
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import Result, emit, laion_parquet, parse  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def peak_rss(cmd: list[str]) -> tuple[float, float]:
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    top = psutil.Process(proc.pid)
    peak = 0
    while proc.poll() is None:
        total = 0
        try:
            for p in [top, *top.children(recursive=True)]:
                try:
                    total += p.memory_full_info().uss
                except psutil.Error:
                    pass
        except psutil.Error:
            pass
        peak = max(peak, total)
        time.sleep(0.2)
    if proc.returncode != 0:
        raise SystemExit(f"build failed: {' '.join(cmd)}")
    return peak / 2**20, time.perf_counter() - t0


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "fusionweave.orchestration.cli", "build", *args, "--no-progress", "--num-cpus", "2"]


def metadata_build(tmp: Path, n: int) -> list[str]:
    parquet = laion_parquet(Path("/tmp/fusionweave-bench") / f"laion-{n}.parquet", n)
    cfg = tmp / f"metadata-{n}.yaml"
    # both sizes take the same (shuffled) URL-dedup path and have at least as many parts as
    # concurrent tasks, so only the input size differs
    cfg.write_text(yaml.safe_dump({"ray": {"local_group_max_rows": 0, "local_group_max_bytes": 0},
                                   "curate": {"metadata": {"input": [str(parquet)], "rows_per_shard": 50_000}}}))
    return cli("curate", "--config", str(cfg), "--out", str(tmp / f"metadata-out-{n}"), "--stages", "metadata")


def model_build(stage: str) -> Callable[[Path, int], list[str]]:
    def build(tmp: Path, n: int) -> list[str]:
        from benchmarks.bench_perceive import configs, make_models, make_shards
        from fusionweave.experts.tiny_models import make_tiny_llava

        models = make_models(tmp / "models", "tiny", 960)
        images = tmp / f"images-{n}"
        make_shards(images, n, PER_SHARD)
        if stage == "perceive":
            experts = configs(models, 1, PER_SHARD)["tagger"]
            experts["depth"] = configs(models, 1, PER_SHARD)["depth"]["depth"]
            recipe = {"perceive": {"input": [str(images)], "chunk_size": PER_SHARD, **experts}}
            args = ["perceive"]
        else:
            if not (models / "llava").exists():
                make_tiny_llava(models / "llava")
            recipe = {"densefusion": {"input": [str(images)], "captioner": {
                "kind": "transformers", "model": str(models / "llava"), "max_new_tokens": 8, "batch_size": PER_SHARD,
                "num_cpus": 0.5, "threads": 1}}}
            args = ["densefusion", "--stages", "caption"]
        cfg = tmp / f"{stage}-{n}.yaml"
        cfg.write_text(yaml.safe_dump({"seed": 0, **recipe}))
        return cli(*args, "--config", str(cfg), "--out", str(tmp / f"{stage}-out-{n}"))
    return build


PER_SHARD = 8
BUILDS: dict[str, tuple[Callable[[Path, int], list[str]], str, str]] = {
    "metadata": (metadata_build, "rows", "memory, metadata stage"),
    "perceive": (model_build("perceive"), "images", "memory, perceive (tagger + depth)"),
    "caption": (model_build("caption"), "images", "memory, caption (transformers)"),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=200_000, help="metadata: LAION rows of the smaller input")
    ap.add_argument("--images", type=int, default=200, help="model stages: images of the smaller input")
    ap.add_argument("--stages", nargs="+", choices=list(BUILDS), default=list(BUILDS))
    args = parse(ap, {"ci": {"rows": 2_000, "images": 8}})
    tmp = Path(tempfile.mkdtemp(prefix="fw-bench-mem-"))
    results = []
    try:
        for stage in args.stages:
            build, unit, name = BUILDS[stage]
            n = args.rows if unit == "rows" else args.images
            (a, ta), (b, tb) = (peak_rss(build(tmp, size)) for size in (n, n * 10))
            results.append(Result(name, f"peak USS of the process tree (driver + Ray), {n * 10:,} {unit} vs {n:,}",
                                  b, a, "MiB", "<= 1.2", {"seconds": [round(ta, 1), round(tb, 1)]}))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    emit(results, args)


if __name__ == "__main__":
    main()
