"""`fusionweave train`, `fusionweave eval` and `fusionweave matching-data`."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from fusionweave.orchestration.config import ConfigError, format_errors, parse_override, set_path


def load_train_config(model: Any, path: Path, overrides: list[str]) -> Any:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"invalid YAML in {path}: {err}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a training config is a mapping of settings, not {type(data).__name__}")
    for o in overrides:
        set_path(data, *parse_override(o))
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_errors(err, str(path))) from None


def cmd_train(args: argparse.Namespace) -> int:
    from functools import partial

    from fusionweave.trainers.registry import METHODS

    entry = METHODS[args.method]
    cfg = load_train_config(entry.config_model(), args.config, args.overrides)
    out = args.out.resolve()
    if args.ray:
        from fusionweave.trainers.core.ray_launch import ray_fit

        fit: Any = ray_fit(args.workers, args.address, args.gpu, args.cpus_per_worker)
    else:
        from fusionweave.trainers.core.loop import fit as local_fit

        fit = partial(local_fit, progress=not args.no_progress)
    result = entry.runner()(args.method, cfg, out, fit)
    print(json.dumps(result))
    print(f"checkpoints, metrics.jsonl and steps.jsonl in {out}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    import numpy as np

    if args.method == "dytrack":
        return eval_dytrack(args)
    if args.method == "caption-engine":
        return cmd_eval_caption_engine(args)

    from fusionweave.trainers.matching.evaluate import coco_1k, ensemble, recall
    from fusionweave.trainers.matching.train import evaluate_checkpoint

    if args.compare:
        from fusionweave.trainers.matching.transfer.compare import table

        print(table(args.compare)[0])
        return 0
    if args.ensemble:
        sims = ensemble(args.ensemble)
        metrics = coco_1k(sims) if args.protocol == "coco1k" else recall(sims)
    else:
        if args.checkpoint is None or args.data is None:
            raise ConfigError("eval needs --checkpoint and --data, or --ensemble SIMS.npy ...")
        metrics = evaluate_checkpoint(args.checkpoint, args.data, args.protocol, args.save_sims)
    print(json.dumps({k: round(float(v), 2) for k, v in metrics.items()}))
    if args.save_sims and not args.ensemble:
        print(f"similarities saved to {args.save_sims} (shape {np.load(args.save_sims).shape})")
    return 0


def cmd_eval_caption_engine(args: argparse.Namespace) -> int:
    """The engine of a caption-engine run (or --engine FOLDER) on its held-out slice (or --data)."""
    from fusionweave.trainers.caption_engine.evaluate import EVAL_FILE, evaluate_engine
    from fusionweave.trainers.caption_engine.method import ENGINE, HOLDOUT

    run = args.run
    if run is None and (args.engine is None or args.data is None):
        raise ConfigError("eval caption-engine needs --run RUN_FOLDER, or --engine FOLDER and --data SFT.json")
    engine = args.engine or run / ENGINE
    data = args.data or run / HOLDOUT
    for what, path in (("engine", engine), ("data", data)):
        if not path.exists():
            hint = " (train with data.holdout > 0, or give --data)" if what == "data" and args.data is None else ""
            raise ConfigError(f"eval caption-engine: {what} {path} does not exist{hint}")
    root = args.image_root or (Path("/") if args.data is None else data.parent)
    try:
        res = evaluate_engine(engine, data, root, args.experts, args.limit, args.max_new_tokens, args.batch_size, run)
    except (ValueError, OSError) as err:
        raise ConfigError(f"eval caption-engine: {err}") from None
    if args.json_out:
        args.json_out.write_text(json.dumps(res, indent=1))
    print(json.dumps({k: v for k, v in res.items() if k not in ("samples", "teacher_lengths")}))
    if run is not None:
        print(f"written to {run / EVAL_FILE} and {run / 'metrics.jsonl'}")
    return 0


def floats(text: str | None) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"expected comma-separated numbers, got {text!r}") from None


def eval_dytrack(args: argparse.Namespace) -> int:
    from fusionweave.trainers.dytrack.evaluate import run_eval

    if not args.data or args.out is None:
        raise ConfigError("eval dytrack needs --data (tracking shards) and --out (the results folder)")
    scores = run_eval(args.checkpoint, [args.data], args.out, floats(args.thresholds), floats(args.sweep), args.results)
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in scores.items()
                      if k not in ("curves", "per_sequence", "tradeoff")}))
    print(f"per-sequence results (pytracking and got10k formats), results.json and plots in {args.out}")
    return 0


def cmd_matching_data(args: argparse.Namespace) -> int:
    from fusionweave.trainers.matching import data

    if args.kind == "synthetic":
        report = data.synthetic(args.out, {"train": args.train, "test": args.test}, seed=args.seed,
                                palette=args.palette, layout=args.layout)
    elif args.kind == "karpathy":
        report = data.from_karpathy(args.annotation, args.images, args.out)
    else:
        report = [data.from_precomp(args.folder, s, args.out) for s in args.splits]
    print(json.dumps(report))
    return 0


def cmd_tracking_data(args: argparse.Namespace) -> int:
    from fusionweave.pipelines.tracking.synthetic import PLANTED, generate

    if args.bad and args.layout != "lasot":
        raise ConfigError("--bad plants its sequences in the LaSOT layout (--layout lasot)")
    names = generate(args.out, args.layout, args.easy, args.hard, args.frames, args.size, args.seed, args.bad)
    recipe = args.out / "tracking.yaml"
    split = {"lasot": None, "got10k": "train", "trackingnet": "TRAIN_0"}[args.layout]
    source = {"name": "synthetic", "layout": args.layout, "root": str(args.out.resolve()),
              **({"split": split} if split else {})}
    recipe.write_text(yaml.safe_dump({"tracking": {"sources": [source]}}, sort_keys=False))
    print(json.dumps({"sequences": names, **({"planted": PLANTED} if args.bad else {})}))
    print(f"build them with: fusionweave build tracking --config {recipe} --out BUILD")
    return 0


def add_parsers(sub: Any) -> None:
    from fusionweave.trainers.registry import METHODS

    t = sub.add_parser("train", help="train a method on shards: " + ", ".join(METHODS),
                       description="\n".join(f"{k}: {v.help}" for k, v in METHODS.items()),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    t.add_argument("method", choices=list(METHODS))
    t.add_argument("--config", required=True, type=Path)
    t.add_argument("--out", required=True, type=Path, help="run folder (rerun the same command to resume)")
    t.add_argument("--set", dest="overrides", action="append", default=[], metavar="A.B=VALUE")
    t.add_argument("--no-progress", action="store_true")
    t.add_argument("--ray", action="store_true", help="train with Ray Train (TorchTrainer), one process per worker")
    t.add_argument("--address", default=None, help="--ray: the cluster to join (default: an embedded local Ray)")
    t.add_argument("--workers", type=int, default=2, help="--ray: training processes")
    t.add_argument("--cpus-per-worker", type=float, default=1.0)
    t.add_argument("--gpu", action="store_true", help="--ray: one GPU per worker")
    e = sub.add_parser("eval", help="R@K and rSum of a checkpoint, of an ensemble of saved similarities, or runs "
                                    "compared (--compare); `eval dytrack`: the tracking protocol (AUC, P@20, P_norm, "
                                    "AO, SR, fps, depth)")
    e.add_argument("method", nargs="?", choices=["dytrack", "caption-engine"], default=None,
                   help="dytrack: track --data with --checkpoint (or score --results) into --out; caption-engine: "
                        "the DenseFusion caption engine on held-out teacher captions (--run RUN)")
    e.add_argument("--checkpoint", type=Path)
    e.add_argument("--data", type=Path, help="a split's shard folder")
    e.add_argument("--protocol", choices=["plain", "coco1k", "coco5k"], default="plain")
    e.add_argument("--save-sims", type=Path)
    e.add_argument("--ensemble", nargs="+", type=Path, help="average these similarity matrices (e.g. SGR + SAF)")
    e.add_argument("--compare", nargs="+", type=Path, metavar="RUN",
                   help="run folders side by side: rSum, memory saved for backward, optimizer state, s/step")
    e.add_argument("--out", type=Path, help="dytrack: the results folder")
    e.add_argument("--thresholds", help="dytrack: exit confidence thresholds, comma-separated (default: the model's)")
    e.add_argument("--sweep", help="dytrack: thresholds to sweep for the success-vs-depth curve, e.g. 0.1,0.3,0.5")
    e.add_argument("--results", type=Path, help="dytrack: score another tracker's pytracking-format results")
    e.add_argument("--run", type=Path, help="caption-engine: a `train caption-engine` folder (engine + holdout.json)")
    e.add_argument("--engine", type=Path, help="caption-engine: an engine folder (merged or adapter); --data: its rows")
    e.add_argument("--image-root", type=Path, help="caption-engine: where --data's image paths are relative to")
    e.add_argument("--experts", nargs="+", help="caption-engine: shards with experts.json (default: the build's inputs)")
    e.add_argument("--limit", type=int, default=None, help="caption-engine: at most this many rows")
    e.add_argument("--max-new-tokens", type=int, default=512, help="caption-engine")
    e.add_argument("--batch-size", type=int, default=8, help="caption-engine")
    e.add_argument("--json-out", type=Path, help="caption-engine: also write the result here")
    d = sub.add_parser("matching-data", help="matching datasets as shards: synthetic, Karpathy JSON or SCAN precomp")
    d.add_argument("kind", choices=["synthetic", "karpathy", "precomp"])
    d.add_argument("--out", type=Path, required=True)
    d.add_argument("--train", type=int, default=2000)
    d.add_argument("--test", type=int, default=200)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--palette", choices=["primary", "muted"], default="primary", help="synthetic: colour shades")
    d.add_argument("--layout", choices=["quadrants", "thirds"], default="quadrants", help="synthetic: 2x2 or 3x3 cells")
    d.add_argument("--annotation", type=Path, help="karpathy: dataset_coco.json / dataset_flickr30k.json")
    d.add_argument("--images", type=Path, help="karpathy: the image root")
    d.add_argument("--folder", type=Path, help="precomp: the folder with {split}_ims.npy and {split}_caps.txt")
    d.add_argument("--splits", nargs="+", default=["train", "dev", "test"])
    td = sub.add_parser("tracking-data", help="small synthetic tracking sequences in the LaSOT/GOT-10k/TrackingNet "
                                              "layouts, and a recipe for `fusionweave build tracking`")
    td.add_argument("kind", choices=["synthetic"])
    td.add_argument("--out", type=Path, required=True)
    td.add_argument("--layout", choices=["lasot", "got10k", "trackingnet"], default="lasot")
    td.add_argument("--easy", type=int, default=4, help="sequences with slow motion and no distractors")
    td.add_argument("--hard", type=int, default=4, help="sequences with distractors, fast motion, occlusions")
    td.add_argument("--frames", type=int, default=30)
    td.add_argument("--size", type=int, default=128, help="frame side in pixels")
    td.add_argument("--seed", type=int, default=0)
    td.add_argument("--bad", action="store_true", help="also plant one bad LaSOT sequence per reject reason")
