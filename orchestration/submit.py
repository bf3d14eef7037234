"""What `fusionweave submit` sends to a Ray cluster's Jobs server: the recipe, validated and
resolved here, in a small working folder (with the small files it names), the build command as
the entrypoint, the environment the build needs, and a submission id derived from the build
itself so that submitting the same build again finds the job already running.

Nothing here talks to the cluster (see jobs_client.py): every refusal happens before an upload."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shlex
import shutil
from dataclasses import dataclass, field
from importlib import import_module
from pathlib import Path
from typing import Any

import yaml

from fusionweave.orchestration.config import ConfigError, load_recipe, section, with_absolute_paths
from fusionweave.pipelines.storage.location import Loc, ObjectPath

# files a recipe names (inputs, vocabularies, prompt templates) up to this size travel with the
# job; folders and larger files must already be where the cluster's nodes can read them
SHIP_MAX_BYTES = 16 << 20
# what a build reads from its environment; never a credential: those travel only when named
FORWARDED_ENV = ("HF_HUB_OFFLINE", "HF_HOME", "HF_HUB_CACHE", "TRANSFORMERS_OFFLINE", "YOLO_OFFLINE",
                 "PADDLE_PDX_DISABLE_MODEL_SOURCE_CHECK", "NO_ALBUMENTATIONS_UPDATE", "AWS_REGION",
                 "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3")
SUBPACKAGES = ("orchestration", "pipelines", "transforms", "experts", "datasets_cards", "trainers", "configs")
ID_PREFIX = "fusionweave-"


@dataclass
class Submission:
    pipeline: str
    out: Loc
    workdir: Path  # uploaded as the job's working_dir
    entrypoint: str
    env: dict[str, str]
    base_id: str  # the first submission's id; later ones (after a finished job) add -2, -3, ...
    shipped: list[str] = field(default_factory=list)  # recipe paths now inside workdir/files
    on_nodes: list[str] = field(default_factory=list)  # recipe paths the nodes must see themselves
    py_modules: list[str] = field(default_factory=list)

    def runtime_env(self) -> dict[str, Any]:
        env: dict[str, Any] = {"working_dir": str(self.workdir), "env_vars": self.env}
        if self.py_modules:
            env["py_modules"] = self.py_modules
        return env


def check_cluster_out(out: Loc, shared: bool) -> None:
    """A cluster's nodes do not share this machine's disk, nor its working directory."""
    if isinstance(out, ObjectPath):
        return
    if not out.is_absolute():
        raise ConfigError(f"--out {out}: a relative path means nothing on the cluster's nodes; give an "
                          "s3:// or gs:// URI, or an absolute path on a shared file system with --shared-path")
    if not shared:
        raise ConfigError(f"--out {out}: a local path; give an s3:// or gs:// URI, or add --shared-path if every "
                          "node of the cluster mounts it at this path")


def plan(pipeline: str, config: Path, out: Loc, workdir: Path, *, overrides: list[str] = (),
         inputs: list[Loc] | None = None, stages: str | None = None, shared: bool = False,
         with_source: bool = False, env_names: list[str] = (), storage_options: list[str] = ()) -> Submission:
    """Validate the build as `build` would before any work, and lay out its submission in `workdir`."""
    from fusionweave.orchestration.commands import check_out_kind, check_stages, input_override, pipeline_spec

    spec = pipeline_spec(pipeline)
    check_cluster_out(out, shared)
    check_out_kind(pipeline, out)
    recipe = load_recipe(config, [*overrides, *input_override(pipeline, inputs)])
    cfg = section(recipe, pipeline)  # the pipeline's section exists and is valid
    check_stages(spec, stages.split(",") if stages else None, cfg)
    env = _environment(env_names)
    workdir.mkdir(parents=True, exist_ok=True)
    shipped: dict[str, str] = {}
    on_nodes: list[str] = []
    data = _ship_files(with_absolute_paths(recipe).model_dump(mode="json", by_alias=True), workdir, shipped, on_nodes)
    (workdir / "recipe.yaml").write_text(yaml.safe_dump(data, sort_keys=True))
    with contextlib.chdir(workdir):  # what the job will load (in its working_dir) must load
        load_recipe("recipe.yaml")
    args = ["build", pipeline, "--config", "recipe.yaml", "--out", str(out), "--no-progress"]
    args += ["--stages", stages] if stages else []
    args += [f"--storage-option={o}" for o in storage_options]
    identity = json.dumps({"pipeline": pipeline, "out": str(out), "recipe": data, "stages": stages,
                           "files": {rel: _digest(workdir / rel) for rel in sorted(shipped.values())}}, sort_keys=True)
    sub = Submission(pipeline, out, workdir, shlex.join(["python", "-m", "fusionweave.orchestration.cli", *args]), env,
                     f"{ID_PREFIX}{pipeline}-{hashlib.sha256(identity.encode()).hexdigest()[:12]}",
                     sorted(shipped), sorted(set(on_nodes)))
    if with_source:
        sub.py_modules = [str(_stage_source(workdir.parent / f"{workdir.name}-source"))]
    return sub


def _environment(named: list[str]) -> dict[str, str]:
    missing = [n for n in named if n not in os.environ]
    if missing:
        raise ConfigError(f"--env {', '.join(missing)}: not set in this environment")
    return {n: os.environ[n] for n in (*FORWARDED_ENV, *named) if n in os.environ}


def _ship_files(v: Any, workdir: Path, shipped: dict[str, str], on_nodes: list[str]) -> Any:
    """The recipe with each small local file it names copied into workdir/files and named
    relative to it (the job runs in its working_dir); folders and large files are listed."""
    if isinstance(v, dict):
        return {k: _ship_files(x, workdir, shipped, on_nodes) for k, x in v.items()}
    if isinstance(v, list):
        return [_ship_files(x, workdir, shipped, on_nodes) for x in v]
    if not (isinstance(v, str) and os.path.isabs(v) and os.path.exists(v)):
        return v
    p = Path(v)
    if p.is_file() and p.stat().st_size <= SHIP_MAX_BYTES:
        if v not in shipped:
            rel = f"files/{len(shipped):03d}/{p.name}"  # the name kept: builds record it (row sources)
            (workdir / rel).parent.mkdir(parents=True)
            shutil.copyfile(p, workdir / rel)
            shipped[v] = rel
        return shipped[v]
    on_nodes.append(v)
    return v


def _digest(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _stage_source(root: Path) -> Path:
    """This installation's `fusionweave` package as one folder, for the job's py_modules (a
    cluster image without fusionweave, or with another version of it)."""
    pkg = root / "fusionweave"
    if pkg.exists():
        shutil.rmtree(pkg)
    for name in SUBPACKAGES:
        src = Path(import_module(f"fusionweave.{name}").__path__[0])
        shutil.copytree(src, pkg / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return pkg
