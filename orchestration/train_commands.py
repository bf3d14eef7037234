"""`fusionweave train`, `fusionweave eval` and `fusionweave matching-data`."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from fusionweave.orchestration.config import ConfigError, format_errors, parse_override, set_path


def load_train_config(path: Path, overrides: list[str]) -> Any:
    from fusionweave.trainers.matching.train import TrainConfig

    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"invalid YAML in {path}: {err}") from err
    for o in overrides:
        set_path(data, *parse_override(o))
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_errors(err, str(path))) from None


def cmd_train(args: argparse.Namespace) -> int:
    from fusionweave.trainers.matching.train import train

    cfg = load_train_config(args.config, args.overrides)
    if args.method == "dbl" and cfg.dbl.anchor == "frozen" and cfg.dbl.anchor_checkpoint is None:
        raise ConfigError("dbl.anchor: frozen needs dbl.anchor_checkpoint (the best.pt of an earlier run)")
    for split in (cfg.train, cfg.test):
        if not Path(split).exists():
            raise ConfigError(f"no shards at {split} (make them with `fusionweave matching-data`)")
    result = train(args.method, cfg, args.out, progress=not args.no_progress)
    print(json.dumps(result))
    print(f"checkpoints and metrics.jsonl in {args.out}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    import numpy as np

    from fusionweave.trainers.matching.evaluate import coco_1k, ensemble, recall
    from fusionweave.trainers.matching.train import evaluate_checkpoint

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


def cmd_matching_data(args: argparse.Namespace) -> int:
    from fusionweave.trainers.matching import data

    if args.kind == "synthetic":
        report = data.synthetic(args.out, {"train": args.train, "test": args.test}, seed=args.seed)
    elif args.kind == "karpathy":
        report = data.from_karpathy(args.annotation, args.images, args.out)
    else:
        report = [data.from_precomp(args.folder, s, args.out) for s in args.splits]
    print(json.dumps(report))
    return 0


def add_parsers(sub: Any) -> None:
    t = sub.add_parser("train", help="train an image-text matching method on shards")
    t.add_argument("method", choices=["vse", "gssf", "sgr", "saf", "rcar", "dbl"])
    t.add_argument("--config", required=True, type=Path)
    t.add_argument("--out", required=True, type=Path, help="run folder (rerun to resume)")
    t.add_argument("--set", dest="overrides", action="append", default=[], metavar="A.B=VALUE")
    t.add_argument("--no-progress", action="store_true")
    e = sub.add_parser("eval", help="R@K and rSum of a checkpoint, or of an ensemble of saved similarities")
    e.add_argument("--checkpoint", type=Path)
    e.add_argument("--data", type=Path, help="a split's shard folder")
    e.add_argument("--protocol", choices=["plain", "coco1k", "coco5k"], default="plain")
    e.add_argument("--save-sims", type=Path)
    e.add_argument("--ensemble", nargs="+", type=Path, help="average these similarity matrices (e.g. SGR + SAF)")
    d = sub.add_parser("matching-data", help="matching datasets as shards: synthetic, Karpathy JSON or SCAN precomp")
    d.add_argument("kind", choices=["synthetic", "karpathy", "precomp"])
    d.add_argument("--out", type=Path, required=True)
    d.add_argument("--train", type=int, default=2000)
    d.add_argument("--test", type=int, default=200)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--annotation", type=Path, help="karpathy: dataset_coco.json / dataset_flickr30k.json")
    d.add_argument("--images", type=Path, help="karpathy: the image root")
    d.add_argument("--folder", type=Path, help="precomp: the folder with {split}_ims.npy and {split}_caps.txt")
    d.add_argument("--splits", nargs="+", default=["train", "dev", "test"])
