"""What each CLI command does."""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from orchestration import report
from orchestration.build_info import write_build_json
from orchestration.config import ConfigError, Recipe, load_recipe, section
from orchestration.ray_engine import RayEngine
from pipelines.curate import pipeline as curate_pipeline

PIPELINES = {"curate": curate_pipeline}
CONFIGS_DIR = Path(__file__).resolve().parents[1] / "configs"


def _engine(args: argparse.Namespace, recipe: Recipe) -> RayEngine:
    mem = recipe.ray.object_store_memory_mb
    return RayEngine(address=args.address or recipe.ray.address, num_cpus=args.num_cpus or recipe.ray.num_cpus,
                     object_store_memory=mem * 1024 * 1024 if mem else None, progress=not args.no_progress,
                     local_group_max_rows=recipe.ray.local_group_max_rows)


def run_build(pipeline: str, recipe: Recipe, out: Path, args: argparse.Namespace,
              stages: list[str] | None = None) -> dict[str, dict]:
    """Validate everything, record build.json, run the stages, then print and save the report."""
    if pipeline not in PIPELINES:
        raise ConfigError(f"unknown pipeline {pipeline!r}; available: {sorted(PIPELINES)}")
    mod = PIPELINES[pipeline]
    cfg = section(recipe, pipeline)
    if stages:
        unknown = [s for s in stages if s not in mod.STAGES]
        if unknown:
            raise ConfigError(f"--stages: unknown stage(s) {unknown}; {pipeline} has {list(mod.STAGES)}")
    write_build_json(out, pipeline, {**cfg.model_dump(mode="json", by_alias=True)}, recipe.seed, sys.argv)
    t0 = time.perf_counter()
    stage_engines = {}
    if getattr(args, "engine", "ray") == "beam":
        if "metadata" not in mod.STAGES:
            raise ConfigError(f"--engine beam runs the metadata stage; {pipeline} has none")
        from orchestration.beam_engine import BeamEngine

        stage_engines["metadata"] = BeamEngine(args.beam_runner, args.beam_options, args.num_cpus)
    with _engine(args, recipe) as engine:
        results = mod.run(cfg, out, engine, stages, stage_engines)
    text = report.write(out, list(mod.STAGES))
    print(f"\nrun report ({time.perf_counter() - t0:.1f}s) -> {out / 'report.txt'}\n{text}")
    bad = [s for s, st in results.items() if not st.get("balanced", True)]
    if bad:
        print(f"fusionweave: rows do not balance in {bad}", file=sys.stderr)
    return results


def cmd_build(args: argparse.Namespace) -> int:
    recipe = load_recipe(args.config, args.overrides)
    stages = args.stages.split(",") if args.stages else None
    run_build(args.pipeline, recipe, args.out, args, stages)
    return 0


def cmd_sample_laion(args: argparse.Namespace) -> int:
    from pipelines.sample_laion import generate

    planted = generate(args.n, args.out, seed=args.seed, base_url=args.base_url)
    print(f"wrote {args.n} rows to {args.out / 'laion.parquet'} and images to {args.out / 'images'}")
    print("planted cases (expected reject reason: count): " + json.dumps({k: len(v) for k, v in planted.items()}))
    print(f"serve them with: fusionweave serve {args.out} --port <port of {args.base_url}>")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from pipelines.sample_server import SampleServer

    with SampleServer(args.root, port=args.port) as srv:
        print(f"serving {args.root} on {srv.base_url} (Ctrl-C to stop)")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from pipelines.sample_laion import generate
    from pipelines.sample_server import SampleServer

    out: Path = args.out
    data = out / "sample-data"
    # the server's port changes per run and is written into the parquet, so a demo always
    # starts a fresh build (a real build resumes; see `fusionweave build`)
    if out.exists():
        shutil.rmtree(out)
    data.mkdir(parents=True)
    with SampleServer(data, slow_seconds=3.0) as srv:
        generate(args.n, data, seed=0, base_url=srv.base_url)
        recipe = load_recipe(CONFIGS_DIR / "demo.yaml", [f"curate.metadata.input=[{data / 'laion.parquet'}]",
                                                          *args.overrides])
        run_build("curate", recipe, out / "build", args)
    print(f"\ndemo finished: curated shards in {out / 'build' / 'validate'}, rejects in each stage's _rejects/, "
          f"report in {out / 'build' / 'report.txt'}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    print(report.render(report.collect(args.out)))
    return 0
