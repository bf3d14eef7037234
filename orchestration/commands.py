"""What each CLI command does."""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from fusionweave.configs import packaged
from fusionweave.orchestration import report
from fusionweave.orchestration.build_info import check_build_folder, write_build_json
from fusionweave.orchestration.config import (ConfigError, Recipe, load_recipe, paths_in, section,
                                              with_absolute_paths)
from fusionweave.orchestration.ray_engine import RayEngine
from fusionweave.pipelines.curate.pipeline import PIPELINE as CURATE
from fusionweave.pipelines.densefusion.pipeline import PIPELINE as DENSEFUSION
from fusionweave.pipelines.mcl.pipeline import PIPELINE as MCL
from fusionweave.pipelines.perceive.pipeline import PIPELINE as PERCEIVE
from fusionweave.pipelines.pipeline_spec import Pipeline
from fusionweave.pipelines.select.pipeline import PIPELINE as SELECT
from fusionweave.pipelines.tracking.pipeline import PIPELINE as TRACKING
from fusionweave.pipelines.storage import store
from fusionweave.pipelines.storage.filesystems import redacted
from fusionweave.pipelines.storage.lease import Lease
from fusionweave.pipelines.storage.location import Loc, ObjectPath, absolute
from fusionweave.pipelines.storage.store import StorageError
from fusionweave.pipelines.storage.build_folder import WORK
from fusionweave.pipelines.upstream import input_paths

PIPELINES: dict[str, Pipeline] = {p.name: p for p in (CURATE, SELECT, PERCEIVE, DENSEFUSION, MCL, TRACKING)}


def _engine(args: argparse.Namespace, recipe: Recipe) -> RayEngine:
    mem = recipe.ray.object_store_memory_mb
    return RayEngine(address=args.address or recipe.ray.address, num_cpus=args.num_cpus or recipe.ray.num_cpus,
                     object_store_memory=mem * 1024 * 1024 if mem else None, progress=not args.no_progress,
                     local_group_max_rows=recipe.ray.local_group_max_rows,
                     local_group_max_bytes=recipe.ray.local_group_max_bytes,
                     part_timeout_s=recipe.ray.part_timeout_s, part_attempts=recipe.ray.part_attempts)


def run_build(pipeline: str, recipe: Recipe, out: Loc, args: argparse.Namespace,
              stages: list[str] | None = None) -> dict[str, dict]:
    """Validate everything, then, holding the build folder's lease, record build.json, run the
    stages, and print and save the report."""
    spec = pipeline_spec(pipeline)
    out = absolute(out)  # workers do not share the driver's working directory
    check_out_kind(pipeline, out)
    check_out(out)
    cfg = with_absolute_paths(section(recipe, pipeline))  # resolved here, recorded so in build.json
    if "seed" in type(cfg).model_fields and cfg.seed is None:
        cfg = cfg.model_copy(update={"seed": recipe.seed})  # recorded resolved in build.json
    recorded, inputs = cfg, None
    if spec.upstream is not None:  # the shards actually read are recorded in build.json, never a silent fallback
        cfg = cfg.model_copy(update={"input": input_paths(cfg.input, out, spec.upstream, pipeline)})
        inputs = [str(p) for p in cfg.input]
    # everything knowable before work (inputs, models, sizes); what it found is handed to the run
    checked = spec.check(cfg, out) if spec.check is not None else None
    check_stages(spec, stages, cfg)
    with Lease(out):  # one build writes a folder at a time
        write_build_json(out, pipeline, recorded.model_dump(mode="json", by_alias=True), recipe.seed,
                         redacted(sys.argv), card=recipe.card.model_dump(), inputs=inputs, stages=spec.stages_for(cfg),
                         final=spec.final)
        return _run_and_check(spec, recipe, cfg, out, args, stages, inputs, checked)


def pipeline_spec(pipeline: str) -> Pipeline:
    if pipeline not in PIPELINES:
        raise ConfigError(f"unknown pipeline {pipeline!r}; available: {sorted(PIPELINES)}")
    return PIPELINES[pipeline]


def check_stages(spec: Pipeline, stages: list[str] | None, cfg: Any = None) -> None:
    """Every stage named exists and, given the config, is one it runs (never skipped silently)."""
    unknown = [s for s in stages or [] if s not in spec.stages]
    if unknown:
        raise ConfigError(f"--stages: unknown stage(s) {unknown}; {spec.name} has {list(spec.stages)}")
    off = [s for s in stages or [] if cfg is not None and s not in spec.stages_for(cfg)]
    if off:
        switches = sorted({spec.switches[s] for s in off if s in spec.switches})
        raise ConfigError(f"--stages: this config does not run {off}" +
                          (f"; set {' and '.join(f'{w}=true' for w in switches)} to run it" if switches else ""))


def check_out_kind(pipeline: str, out: Loc) -> None:
    """Only some builds write to object storage."""
    if isinstance(out, ObjectPath) and not PIPELINES[pipeline].object_storage:
        raise ConfigError(f"--out {out}: the {pipeline} build writes a local (or shared) build folder; of the "
                          f"builds, {', '.join(n for n, p in PIPELINES.items() if p.object_storage)} write to "
                          "object storage")


def check_out(out: Loc) -> None:
    """The build folder is one (or can be) and can be written, read and listed, before any
    work: a missing bucket, refused credentials or an unreachable endpoint stop here, in a line."""
    try:
        check_build_folder(out)
    except StorageError as err:
        raise ConfigError(f"--out {out}: {err.strerror}") from None
    problem = store.probe(out)
    if problem is not None:
        raise ConfigError(f"--out {problem}")


def _run_and_check(spec: Pipeline, recipe: Recipe, cfg: Any, out: Loc, args: argparse.Namespace,
                   stages: list[str] | None, inputs: list[str] | None, checked: Any) -> dict[str, dict]:
    """Run the stages, write and print the report, then check the build as `verify` does."""
    t0 = time.perf_counter()
    stage_engines = {}
    if getattr(args, "engine", "ray") == "beam":
        if spec.beam_stage is None:
            raise ConfigError(f"--engine beam runs the metadata stage; {spec.name} has none")
        from fusionweave.orchestration.beam_engine import BeamEngine

        # part results go through the build folder: a Flink or Dataflow worker cannot see this disk
        stage_engines[spec.beam_stage] = BeamEngine(args.beam_runner, args.beam_options, args.num_cpus,
                                                    results_at=out / spec.beam_stage / WORK / "beam")
    with _engine(args, recipe) as engine:
        # (shipped files, such as the default prompt template, are read here, on the driver)
        engine.preflight([p for p in paths_in(cfg) if not p.is_relative_to(packaged(""))], out)
        results = spec.run(cfg, out, engine, stages, stage_engines, checked)
    text = report.write(out, _stage_order(out))
    print(f"\nrun report ({time.perf_counter() - t0:.1f}s) -> {out / 'report.txt'}\n{text}")
    # the build checks itself as `verify` does (not re-reading the data): its manifests, the files
    # they list, its accounting and each stage against the one it read
    from fusionweave.datasets_cards.verify import verify

    # (the first stage is linked to the upstream stage only when that is what it read)
    read_upstream = spec.upstream is not None and inputs == [str(out / spec.upstream)]
    order = [spec.upstream] if read_upstream else []
    problems = verify(out, order + [s for s in spec.stages_for(cfg) if s in results], only=list(results), deep=False)
    if problems:
        raise BuildCheckFailed(f"the build's own check found {len(problems)} problem(s): " + "; ".join(problems[:5]))
    return results


class BuildCheckFailed(RuntimeError):
    pass


def input_override(pipeline: str, inputs: list[Path] | None) -> list[str]:
    """`--input PATH ...` as the `--set` of the pipeline's input field (JSON is valid YAML, so any
    path survives the override parser)."""
    if not inputs:
        return []
    field = PIPELINES[pipeline].input_field if pipeline in PIPELINES else None
    if field is None:
        raise ConfigError(f"--input: the {pipeline} build reads the sources named in its recipe ({pipeline}.sources)")
    return [f"{field}={json.dumps([str(p) for p in inputs])}"]


def cmd_build(args: argparse.Namespace) -> int:
    recipe = load_recipe(args.config, [*args.overrides, *input_override(args.pipeline, args.inputs)])
    stages = args.stages.split(",") if args.stages else None
    try:
        run_build(args.pipeline, recipe, args.out, args, stages)
    except BuildCheckFailed as err:
        print(f"fusionweave: {err}", file=sys.stderr)
        return 1
    return 0


def cmd_sample_laion(args: argparse.Namespace) -> int:
    from fusionweave.pipelines.fixtures.sample_laion import generate

    planted = generate(args.n, args.out, seed=args.seed, base_url=args.base_url)
    print(f"wrote {args.n} rows to {args.out / 'laion.parquet'} and images to {args.out / 'images'}")
    print("planted cases (expected reject reason: count): " + json.dumps({k: len(v) for k, v in planted.items()}))
    print(f"serve them with: fusionweave serve {args.out} --port <port of {args.base_url}>")
    return 0


def cmd_sample_mcl(args: argparse.Namespace) -> int:
    from fusionweave.pipelines.fixtures.sample_mcl import PLANTED, generate

    if args.closed:
        from fusionweave.pipelines.fixtures.sample_mcl_closed import generate_closed

        recipe = generate_closed(args.out, args.depth_model, args.seed, args.train, args.test)
        print(f"wrote closed-answer MCL sources (four answers per modality) under {args.out} and the recipe {recipe}")
        print(f"build them with: fusionweave build mcl --config {recipe} --out BUILD")
        return 0
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
    from fusionweave.pipelines.fixtures.sample_server import SampleServer

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
    from fusionweave.pipelines.fixtures.sample_laion import generate
    from fusionweave.pipelines.fixtures.sample_server import SampleServer

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


def _stage_order(out: Loc) -> list[str]:
    from fusionweave.datasets_cards.card import build_outputs

    path = out / "build.json"
    build = json.loads(store.read_text(path)) if store.exists(path) else {}
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
