"""OUT/build.json: the resolved config, package versions, seed and code revision."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from fusionweave.pipelines.storage import store
from fusionweave.pipelines.storage.lease import LEASE
from fusionweave.pipelines.storage.location import Loc

PACKAGES = ["fusionweave", "ray", "pyarrow", "webdataset", "img2dataset", "pillow", "numpy", "pydantic", "imagehash",
            "apache-beam", "torch", "transformers", "huggingface_hub"]


class ConfigMismatch(RuntimeError):
    pass


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": sys.version.split()[0]}
    for p in PACKAGES:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            out[p] = None
    return out


def code_revision() -> str | None:
    try:
        root = Path(__file__).resolve().parents[1]
        rev = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        if rev.returncode == 0:
            dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                   capture_output=True, text=True, timeout=5).stdout.strip()
            return rev.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return None


def check_build_folder(out: Loc) -> None:
    """Refuse an --out that cannot be this build's folder, before any work: a file, or a folder
    that holds something but no build.json (another tool's output, or a build whose record was
    lost: its stage folders would otherwise be taken as this build's completed stages). The
    lease of a build that is starting there, and preflight probes, are not content."""
    if store.is_file(out):
        raise ConfigMismatch(f"--out {out} is a file, not a build folder; name a new or existing build folder")
    if not store.exists(out / "build.json"):
        found = sorted(n for n in store.listdir(out) if not n.startswith(".") and n != LEASE)
        if found:
            raise ConfigMismatch(
                f"--out {out} is not empty ({', '.join(found[:5])}{', ...' if len(found) > 5 else ''}) but has no "
                f"build.json, so it is not a fusionweave build folder that can be resumed; use a new --out")


def write_build_json(out: Loc, pipeline: str, config: dict[str, Any], seed: int, argv: list[str],
                     card: dict[str, Any] | None = None, stages: list[str] | None = None,
                     final: str | None = None, inputs: list[str] | None = None) -> dict[str, Any]:
    """Write build.json, or check it: resuming into a folder built with another config would
    mix two datasets, so that is refused."""
    path = out / "build.json"
    if store.exists(path):
        old = json.loads(store.read_text(path))
        if old.get("pipelines", {}).get(pipeline) not in (None, config):
            raise ConfigMismatch(
                f"{out} holds a {pipeline} build made with a different config; use a new --out "
                f"(or delete {out}) to build with this one")
    else:
        old = {"created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    info = {**old, "seed": seed, "versions": versions(), "code_revision": code_revision(), "argv": argv,
            "pipelines": {**old.get("pipelines", {}), pipeline: config}, "card": card or old.get("card") or {}}
    if inputs is not None:  # the shards this pipeline actually read (its upstream stage, or --input)
        info["inputs"] = {**old.get("inputs", {}), pipeline: inputs}
    if stages:
        prior = old.get("outputs", {})
        # the order pipelines ran in (each reads the one before); build.json's keys are sorted
        seq = prior.get(pipeline, {}).get("sequence", max((o.get("sequence", 0) for o in prior.values()), default=-1) + 1)
        info["outputs"] = {**prior, pipeline: {"stages": stages, "final": final or stages[-1], "sequence": seq}}
    store.put_bytes(path, json.dumps(info, indent=2, sort_keys=True, default=str).encode())
    return info
