"""What each CLI command does."""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

from fusionweave.configs import packaged
from fusionweave.orchestration import report
from fusionweave.orchestration.build_info import check_build_folder, write_build_json
from fusionweave.orchestration.config import ConfigError, Recipe, load_recipe, section
from fusionweave.orchestration.ray_engine import RayEngine
from fusionweave.pipelines.curate import pipeline as curate_pipeline
from fusionweave.pipelines.densefusion import pipeline as densefusion_pipeline
from fusionweave.pipelines.mcl import pipeline as mcl_pipeline
from fusionweave.pipelines.perceive import pipeline as perceive_pipeline
from fusionweave.pipelines.upstream import input_paths
from fusionweave.pipelines.select import pipeline as select_pipeline

PIPELINES = {"curate": curate_pipeline, "select": select_pipeline, "perceive": perceive_pipeline,
             "densefusion": densefusion_pipeline, "mcl": mcl_pipeline}


def _engine(args: argparse.Namespace, recipe: Recipe) -> RayEngine:
    mem = recipe.ray.object_store_memory_mb
    return RayEngine(address=args.address or recipe.ray.address, num_cpus=args.num_cpus or recipe.ray.num_cpus,
                     object_store_memory=mem * 1024 * 1024 if mem else None, progress=not args.no_progress,
                     local_group_max_rows=recipe.ray.local_group_max_rows,
                     local_group_max_bytes=recipe.ray.local_group_max_bytes)


def run_build(pipeline: str, recipe: Recipe, out: Path, args: argparse.Namespace,
              stages: list[str] | None = None) -> dict[str, dict]:
    """Validate everything, record build.json, run the stages, then print and save the report."""
    if pipeline not in PIPELINES:
        raise ConfigError(f"unknown pipeline {pipeline!r}; available: {sorted(PIPELINES)}")
    out = Path(os.path.abspath(out))  # workers do not share the driver's working directory
    check_build_folder(out)
    mod = PIPELINES[pipeline]
    cfg = section(recipe, pipeline)
    if "seed" in type(cfg).model_fields and cfg.seed is None:
        cfg = cfg.model_copy(update={"seed": recipe.seed})  # recorded resolved in build.json
    recorded, inputs = cfg, None
    upstream = getattr(mod, "UPSTREAM", None)
    if upstream is not None:  # the shards actually read are recorded in build.json, never a silent fallback
        cfg = cfg.model_copy(update={"input": input_paths(cfg.input, out, upstream, pipeline)})
        inputs = [str(p) for p in cfg.input]
    if hasattr(mod, "check"):
        mod.check(cfg, out)  # everything knowable before work: inputs, models, sizes
    if stages:
        unknown = [s for s in stages if s not in mod.STAGES]
        if unknown:
            raise ConfigError(f"--stages: unknown stage(s) {unknown}; {pipeline} has {list(mod.STAGES)}")
    write_build_json(out, pipeline, recorded.model_dump(mode="json", by_alias=True), recipe.seed, sys.argv,
                     card=recipe.card.model_dump(), inputs=inputs,
                     stages=list(mod.stages_for(cfg)) if hasattr(mod, "stages_for") else list(mod.STAGES),
                     final=getattr(mod, "FINAL", None))
    t0 = time.perf_counter()
    stage_engines = {}
    if getattr(args, "engine", "ray") == "beam":
        if "metadata" not in mod.STAGES:
            raise ConfigError(f"--engine beam runs the metadata stage; {pipeline} has none")
        from fusionweave.orchestration.beam_engine import BeamEngine

        stage_engines["metadata"] = BeamEngine(args.beam_runner, args.beam_options, args.num_cpus)
    with _engine(args, recipe) as engine:
        results = mod.run(cfg, out, engine, stages, stage_engines)
    text = report.write(out, _stage_order(out))
    print(f"\nrun report ({time.perf_counter() - t0:.1f}s) -> {out / 'report.txt'}\n{text}")
    bad = [s for s, st in results.items() if not st.get("balanced", True)]
    if bad:
        print(f"fusionweave: rows do not balance in {bad}", file=sys.stderr)
    return results


def input_override(pipeline: str, inputs: list[Path] | None) -> list[str]:
    """`--input PATH ...` as the `--set` of the pipeline's input field (JSON is valid YAML, so any
    path survives the override parser)."""
    if not inputs:
        return []
    if pipeline == "mcl":
        raise ConfigError("--input: the mcl build reads the sources named in its recipe (mcl.sources)")
    field = "curate.metadata.input" if pipeline == "curate" else f"{pipeline}.input"
    return [f"{field}={json.dumps([str(p) for p in inputs])}"]


def cmd_build(args: argparse.Namespace) -> int:
    recipe = load_recipe(args.config, [*args.overrides, *input_override(args.pipeline, args.inputs)])
    stages = args.stages.split(",") if args.stages else None
    run_build(args.pipeline, recipe, args.out, args, stages)
    return 0


def cmd_sample_laion(args: argparse.Namespace) -> int:
    from fusionweave.pipelines.sample_laion import generate

    planted = generate(args.n, args.out, seed=args.seed, base_url=args.base_url)
    print(f"wrote {args.n} rows to {args.out / 'laion.parquet'} and images to {args.out / 'images'}")
    print("planted cases (expected reject reason: count): " + json.dumps({k: len(v) for k, v in planted.items()}))
    print(f"serve them with: fusionweave serve {args.out} --port <port of {args.base_url}>")
    return 0


def cmd_sample_mcl(args: argparse.Namespace) -> int:
    from fusionweave.pipelines.mcl.sample_data import PLANTED, generate

    recipe = generate(args.out, args.depth_model, args.seed)
    print(f"wrote MCL sources (image, video, audio, depth, point cloud) under {args.out} and the recipe {recipe}")
    print("planted bad inputs (expected reject reason: items): " + json.dumps(PLANTED))
    print(f"build them with: fusionweave build mcl --config {recipe} --out BUILD")
    return 0


def cmd_tiny_model(args: argparse.Namespace) -> int:
    from fusionweave.experts.tiny_models import TINY_MODELS

    path = TINY_MODELS[args.kind](args.out, seed=args.seed)
    print(f"wrote a tiny random-weight {args.kind} model to {path} (for demos and tests only)")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from fusionweave.pipelines.sample_server import SampleServer

    with SampleServer(args.root, port=args.port) as srv:
        print(f"serving {args.root} on {srv.base_url} (Ctrl-C to stop)")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    return 0


DEMO_TINY = {"select.embed.model": "clip", "perceive.tagger.model": "clip-pair", "perceive.ovd.model": "owlv2",
             "perceive.depth.model": "depth"}
DEMO_PIPELINES = ("select", "perceive", "densefusion")


def demo_models(out: Path, overrides: list[str]) -> tuple[list[str], list[str]]:
    """Overrides that point every `tiny` model of the demo recipe at a tiny random model written
    under OUT/models (unless the user named a model for it), and what each one stands for."""
    from fusionweave.experts.tiny_models import TINY_MODELS

    given = {o.split("=", 1)[0] for o in overrides}
    sets, labels = [], []
    for field, kind in DEMO_TINY.items():
        if field in given:
            continue
        path = out / "models" / kind
        if not path.exists():
            TINY_MODELS[kind](path)
        sets.append(f"{field}={path}")
        labels.append(f"{field} = tiny random {kind}")
    if "perceive.detector.model" not in given:
        labels.append("perceive.detector.model = yolov8n.yaml (random weights)")
    return sets, labels


def cmd_demo(args: argparse.Namespace) -> int:
    from fusionweave.pipelines.sample_laion import generate
    from fusionweave.pipelines.sample_server import SampleServer

    out: Path = args.out
    data = out / "sample-data"
    build = out / "build"
    # the server's port changes per run and is written into the parquet, so a demo always
    # starts a fresh build (a real build resumes; see `fusionweave build`)
    if out.exists():
        shutil.rmtree(out)
    data.mkdir(parents=True)
    with SampleServer(data, slow_seconds=12.0) as srv:
        generate(args.n, data, seed=0, base_url=srv.base_url)
        recipe = load_recipe(packaged("demo.yaml"), [f"curate.metadata.input=[{data / 'laion.parquet'}]",
                                                          *args.overrides])
        run_build("curate", recipe, build, args)
    tiny, labels = demo_models(out, args.overrides)
    recipe = load_recipe(packaged("demo.yaml"), [f"curate.metadata.input=[{data / 'laion.parquet'}]",
                                                      *tiny, *args.overrides])
    for pipeline in DEMO_PIPELINES:
        run_build(pipeline, recipe, build, args)
    info = json.loads((build / "build.json").read_text())
    info["demo_models"] = labels
    (build / "build.json").write_text(json.dumps(info, indent=2, sort_keys=True))
    from fusionweave.datasets_cards.card import render
    from fusionweave.datasets_cards.verify import verify

    card = render(build)
    problems = verify(build, _stage_order(build))
    print("\ndemo finished (curate -> select -> perceive -> densefusion):")
    print(f"  curated shards      {build / 'validate'}")
    print(f"  selected shards     {build / 'select'}  (cluster plot: {build / 'select' / 'cluster_sizes.png'})")
    print(f"  expert priors       {build / 'perceive'}  (experts.json, depth.png per sample)")
    print(f"  dense captions      {build / 'caption'}  (+ {build / 'export'}: densefusion.jsonl, llava_pretrain.json)")
    print(f"  rejects             each stage's _rejects/; report {build / 'report.txt'}; card {card}")
    print("  models: " + "; ".join(labels + ["perceive.ocr = RapidOCR (real PP-OCRv4)"]))
    cap = json.loads((build / "caption" / "_stats.json").read_text()).get("captioner", {})
    if cap.get("kind") == "priors-template":
        print("  captions: written by the priors-template captioner from the priors, NOT by a model")
    print("  verify: " + ("ok" if not problems else f"{len(problems)} problem(s): {problems[:3]}"))
    return 1 if problems else 0


def _stage_order(out: Path) -> list[str]:
    from fusionweave.datasets_cards.card import build_outputs

    path = out / "build.json"
    build = json.loads(path.read_text()) if path.exists() else {}
    return [s for _, stages, _ in build_outputs(build) for s in stages]


def cmd_card(args: argparse.Namespace) -> int:
    from fusionweave.datasets_cards.card import CardError, render

    try:
        path = render(args.out)
    except CardError as err:
        print(f"fusionweave card: {err}", file=sys.stderr)
        return 1
    print(f"wrote {path}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from fusionweave.datasets_cards.verify import verify

    problems = verify(args.out, _stage_order(args.out))
    if problems:
        print(f"{args.out}: {len(problems)} problem(s)", file=sys.stderr)
        for p in problems:
            print(f"  {p}", file=sys.stderr)
        return 1
    print(f"{args.out}: ok (every shard matches its manifest; every stage balances)")
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    from fusionweave.datasets_cards.publish import PublishError, publish

    try:
        res = publish(args.out, args.repo, private=args.private, revision=args.revision, dry_run=args.dry_run,
                      include_intermediate=args.include_intermediate)
    except PublishError as err:
        print(f"fusionweave publish: {err}", file=sys.stderr)
        return 1
    if args.dry_run:
        for rel, size in res["files"]:
            print(f"{size:>14,}  {rel}")
        print(f"{len(res['files'])} files, {res['bytes']:,} bytes would be uploaded to datasets/{args.repo} (dry run)")
    else:
        print(f"published {len(res['files'])} files to datasets/{args.repo} (commit {res.get('commit')})")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    print(report.render(report.collect(args.out, _stage_order(args.out))))
    return 0
