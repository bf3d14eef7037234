"""The `fusionweave` command."""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

from fusionweave.pipelines.storage.location import Loc, location

# quiet, offline-safe defaults for the libraries we drive; the user's own settings win
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("RAY_DEDUP_LOGS", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # Ray would otherwise report usage to its servers
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

log = logging.getLogger("fusionweave")


def add_storage_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--storage-option", dest="storage_options", action="append", default=[], metavar="K=V",
                   help="object storage setting (repeatable), e.g. endpoint_override=HOST:PORT, scheme=http, "
                        "region=...; S3 also reads the AWS_* environment (AWS_ENDPOINT_URL for S3-compatible servers)")


def add_build_args(p: argparse.ArgumentParser) -> None:
    """What `build` and `submit` share: the pipeline, its recipe, the build folder, which stages."""
    p.add_argument("pipeline", help="curate | select | perceive | densefusion | mcl | tracking")
    p.add_argument("--config", required=True, type=Path, help="YAML recipe")
    p.add_argument("--out", required=True, type=location, help="build folder: a path, or a URI (s3://bucket/prefix)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="A.B=VALUE",
                   help="override a config field (repeatable)")
    p.add_argument("--input", dest="inputs", action="append", type=location, default=None, metavar="PATH",
                   help="shards to read (repeatable): a stage folder, a folder of shards or shard files; default: "
                        "the stage of this build folder the pipeline follows (curate: the parquet in the recipe)")
    p.add_argument("--stages", default=None, help="comma-separated subset of stages to run")
    add_storage_args(p)


def _add_engine_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--address", default=None, help="Ray cluster address (default: $RAY_ADDRESS, else an embedded local Ray)")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs for the embedded local Ray (default: all)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="fusionweave", description="Build multimodal training data as WebDataset shards.")
    sub = ap.add_subparsers(dest="command", required=True)

    b = sub.add_parser("build", help="run a build pipeline")
    add_build_args(b)
    b.add_argument("--engine", choices=["ray", "beam"], default="ray",
                   help="engine for the metadata stage (the other stages always run on Ray)")
    b.add_argument("--beam-runner", default=None,
                   help="Beam runner (default: FnApiRunner, the DirectRunner's local engine, multi-process)")
    b.add_argument("--beam-option", dest="beam_options", action="append", default=[], metavar="K=V",
                   help="Beam pipeline option passed through unchanged (repeatable), e.g. flink_master=host:8081")
    _add_engine_args(b)

    s = sub.add_parser("sample-laion", help="generate LAION-format sample data")
    s.add_argument("--n", type=int, default=1000)
    s.add_argument("--out", type=Path, required=True)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--base-url", default="http://127.0.0.1:8000", help="where `fusionweave serve` will serve the images")

    sm = sub.add_parser("sample-mcl", help="generate small MCL sources (all five modalities, bad inputs planted) "
                                           "and a recipe for `fusionweave build mcl`")
    sm.add_argument("--out", type=Path, required=True)
    sm.add_argument("--depth-model", type=Path, default=None, help="default: a tiny random depth model under OUT/models")
    sm.add_argument("--seed", type=int, default=0)
    sm.add_argument("--closed", action="store_true",
                    help="closed-answer sources instead (colour, motion direction, pitch class, nearest quadrant, "
                         "primitive; four answers each): what `train pathweave` tests learning and forgetting on")
    sm.add_argument("--train", type=int, default=64, help="--closed: training items per modality")
    sm.add_argument("--test", type=int, default=32, help="--closed: eval items per modality")

    sv = sub.add_parser("serve", help="serve sample data on 127.0.0.1 for the download stage")
    sv.add_argument("root", type=Path)
    sv.add_argument("--port", type=int, default=8000)

    d = sub.add_parser("demo", help="generate sample data, serve it on 127.0.0.1 and run the curate build on it")
    d.add_argument("--out", type=Path, default=Path("fusionweave-demo"))
    d.add_argument("--n", type=int, default=300)
    d.add_argument("--set", dest="overrides", action="append", default=[], metavar="A.B=VALUE")
    _add_engine_args(d)

    t = sub.add_parser("tiny-model", help="write a tiny randomly initialised model (demos and tests; no meaning)")
    t.add_argument("kind", choices=["clip", "clip-pair", "owlv2", "depth", "llava", "eva02-clip", "llm", "vision-teacher",
                                    "bert", "resnet", "llava-chat", "image-encoder", "video-encoder", "audio-encoder",
                                    "depth-encoder", "pointcloud-encoder"],
                   help="clip: image tower (select); clip-pair: image+text (tagger); owlv2; depth; llava (captioner); "
                        "eva02-clip: an open_clip EVA02 config (select/tagger with backend: open_clip); "
                        "llm: a Llama causal LM with a word tokenizer, vision-teacher: a CLIP vision tower (EVE); "
                        "bert, resnet: text and image backbones (unipt, sherl); "
                        "llava-chat: a LLaVA with a </s>-EOS tokenizer to fine-tune as a caption engine; "
                        "<modality>-encoder: the frozen encoders of `train pathweave` (RGB-D for depth)")
    t.add_argument("--out", type=Path, required=True)
    t.add_argument("--seed", type=int, default=0)

    r = sub.add_parser("report", help="print the run report of a build folder")
    r.add_argument("out", type=location)
    add_storage_args(r)

    c = sub.add_parser("card", help="render OUT/README.md, the dataset card, from the build's statistics")
    c.add_argument("out", type=location)
    add_storage_args(c)

    v = sub.add_parser("verify", help="check every shard against its manifest and every stage's accounting")
    v.add_argument("out", type=location)
    add_storage_args(v)

    pb = sub.add_parser("publish", help="upload a verified build to a Hugging Face dataset repo")
    pb.add_argument("out", type=location)
    add_storage_args(pb)
    pb.add_argument("--repo", required=True, help="ORG/NAME")
    pb.add_argument("--private", action="store_true")
    pb.add_argument("--revision", default=None, help="branch to upload to (created if missing)")
    pb.add_argument("--dry-run", action="store_true", help="list every file and its size, upload nothing")
    pb.add_argument("--include-intermediate", action="store_true", help="also upload the shards of earlier stages")

    from fusionweave.orchestration.train_commands import add_parsers
    from fusionweave.datasets_cards.view.commands import add_parsers as add_view_parsers
    from fusionweave.orchestration.model_commands import add_parsers as add_model_parsers
    from fusionweave.orchestration.jobs_commands import add_parsers as add_jobs_parsers

    add_parsers(sub)
    add_view_parsers(sub)
    add_model_parsers(sub)
    add_jobs_parsers(sub)
    return ap


def io_failure(err: BaseException, folder: Loc | None = None) -> str | None:
    """One line for an I/O failure (full disk, permissions, a read-only or vanished folder),
    found anywhere in the chain of causes: engines wrap a worker's OSError in their own errors.
    `folder` (the command's --out) is named when the error does not say which file failed."""
    from fusionweave.pipelines.storage.store import failure_reason

    seen: set[int] = set()
    cur: BaseException | None = err
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        inner = getattr(cur, "cause", None)  # Ray's RayTaskError carries the worker's exception here
        if isinstance(cur, OSError) and not isinstance(inner, BaseException) and cur.errno is not None:
            where = location(cur.filename).parent if cur.filename else folder
            what = cur.strerror or str(cur)
            return f"I/O error in {where}: {what}" if where else f"I/O error: {what}"
        if not isinstance(inner, BaseException) and (store_failed := failure_reason(cur)) is not None:
            # an object store's error raised inside a library (a Ray Data or pyarrow reader)
            return f"I/O error on object storage{f' ({folder})' if folder else ''}: {store_failed}"
        cur = inner if isinstance(inner, BaseException) else (cur.__cause__ or cur.__context__)
    return None


def cluster_failure(err: BaseException) -> str | None:
    """One line for a failure of the cluster rather than of the code: a worker, actor or node that
    died and stayed dead through the engine's retries (Ray's system errors; a task that raised is
    a RayTaskError and stays a bug report)."""
    try:
        from ray import exceptions as rx
    except ImportError:  # pragma: no cover - ray is a core dependency
        return None
    from fusionweave.orchestration.ray_engine import PartTimeout

    lost = (PartTimeout, rx.NodeDiedError, rx.WorkerCrashedError, rx.ActorDiedError, rx.ActorUnavailableError, rx.ObjectLostError,
            rx.OwnerDiedError, rx.OutOfMemoryError, rx.RaySystemError)
    seen: set[int] = set()
    cur: BaseException | None = err
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, lost):
            first = (str(cur).strip().splitlines() or [""])[0][:200]
            if isinstance(cur, PartTimeout):
                return first
            return f"the cluster lost a worker or node ({type(cur).__name__}: {first})"
        cur = cur.__cause__ or cur.__context__
    return None


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("faiss.loader", "httpx", "httpx2", "httpcore", "matplotlib", "apache_beam", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    args = build_parser().parse_args(argv)
    if args.command in ("view", "trace"):  # read-only: they need none of the pipelines
        from fusionweave.datasets_cards.view.commands import run

        return run(args)
    if args.command == "models":  # model folders: no pipelines, no engine
        from fusionweave.orchestration.model_commands import run as run_models

        return run_models(args)
    if args.command in ("submit", "jobs"):  # a Ray cluster's Jobs server: the build runs there
        from fusionweave.orchestration.jobs_commands import run as run_jobs

        return run_jobs(args)
    from fusionweave.orchestration import commands
    from fusionweave.orchestration.build_info import ConfigMismatch
    from fusionweave.experts.resolve import ModelNotFound
    from fusionweave.pipelines.errors import BuildSetupError

    from fusionweave.orchestration import train_commands

    from fusionweave.pipelines.storage.filesystems import configure, parse_options
    from fusionweave.pipelines.storage.lease import lost_reason

    try:
        configure(parse_options(getattr(args, "storage_options", None) or []))
        name = "cmd_" + args.command.replace("-", "_")
        handler: Any = getattr(commands, name, None) or getattr(train_commands, name)
        return int(handler(args) or 0)
    except (BuildSetupError, ConfigMismatch, ModelNotFound) as err:
        print(f"fusionweave: {err}", file=sys.stderr)
        return 2
    except Exception as err:  # noqa: BLE001 - I/O and cluster failures get one line; anything else stays a bug report
        io = io_failure(err, getattr(args, "out", None))
        if io is not None:
            print(f"fusionweave: {io}; fix that, then rerun the same command to resume", file=sys.stderr)
            return 75
        lost = cluster_failure(err)
        if lost is None:
            raise
        print(f"fusionweave: {lost}; rerun the same command to resume", file=sys.stderr)
        return 75  # EX_TEMPFAIL: nothing partial is visible, the rerun resumes
    except KeyboardInterrupt:
        if (lost := lost_reason()) is not None:  # the lease's heartbeat found another build writing OUT
            print(f"fusionweave: {lost}", file=sys.stderr)
            return 75
        print("fusionweave: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
