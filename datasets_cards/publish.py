"""`fusionweave publish OUT --repo ORG/NAME`: verified builds only, to a Hub dataset repo."""
from __future__ import annotations

import fnmatch
import json
import shutil
from pathlib import Path
from typing import Any

from fusionweave.datasets_cards.card import build_outputs, render
from fusionweave.datasets_cards.verify import verify
from fusionweave.pipelines.storage import store
from fusionweave.pipelines.storage.build_folder import MANIFEST, STATS
from fusionweave.pipelines.storage.location import Loc, ObjectPath, location


class PublishError(RuntimeError):
    pass


def publish_files(out: Loc, include_intermediate: bool = False) -> list[tuple[str, int]]:
    """What a publish uploads: the card and its plots, build.json and the report, every stage's
    manifest, stats and rejects, and the final stage's shards (intermediate shards on request)."""
    build = json.loads(store.read_text(out / "build.json"))
    finals = {final for _, _, final in build_outputs(build)}
    present = store.files(out, recursive=True)  # relative path -> size, one listing
    ordered = sorted(present, key=lambda r: r.split("/"))
    rels: list[str] = ["README.md", "build.json", "report.json", "report.txt"]
    rels += [r for r in ordered if fnmatch.fnmatchcase(r, "_card/*.png")]
    for s in sorted(r.split("/")[0] for r in present if r.count("/") == 1 and r.endswith(f"/{MANIFEST}")):
        rels += [f"{s}/{MANIFEST}", f"{s}/{STATS}"]
        rels += [r for r in ordered if fnmatch.fnmatchcase(r, f"{s}/_rejects/*.parquet")]
        if f"{s}/{STATS}" in present:  # a stage's own small outputs (exports, stage manifests)
            rels += [f"{s}/{f}" for f in json.loads(store.read_text(out / s / STATS)).get("files", [])]
        if s in finals or include_intermediate:
            rels += [r for r in ordered if r.startswith(f"{s}/") and fnmatch.fnmatchcase(r.rsplit("/", 1)[1], "shard-*.tar")]
    return [(r, present[r]) for r in rels if r in present]


def publish(out: str | Path | ObjectPath, repo: str, *, private: bool = False, revision: str | None = None,
            dry_run: bool = False, include_intermediate: bool = False, token: str | None = None) -> dict[str, Any]:
    out = location(out)
    if not store.exists(out / "build.json"):
        raise PublishError(f"{out} is not a fusionweave build folder (no build.json)")
    build = json.loads(store.read_text(out / "build.json"))
    order = [s for _, stages, _ in build_outputs(build) for s in stages]
    problems = verify(out, order)
    if problems:
        raise PublishError("refusing to publish a build that fails verify:\n  " + "\n  ".join(problems))
    if not store.exists(out / "README.md"):
        render(out)
    files = publish_files(out, include_intermediate)
    result: dict[str, Any] = {"repo": repo, "files": files, "bytes": sum(s for _, s in files)}
    if dry_run:
        return result
    from huggingface_hub import DatasetCard, HfApi

    # the Hub client uploads local files: a build on an object store is copied down first
    folder = local_copy(out, files)
    # the token comes from HF_TOKEN or the huggingface_hub login; it is never printed or logged here
    api = HfApi(token=token)
    DatasetCard.load(folder / "README.md").validate(repo_type="dataset")
    api.create_repo(repo, repo_type="dataset", private=private, exist_ok=True)
    if revision:
        api.create_branch(repo, branch=revision, repo_type="dataset", exist_ok=True)
    # huggingface_hub 2.x's upload_folder is the resumable large-folder upload: a rerun skips
    # files the repo already holds (same oid) and re-sends nothing the storage already has
    commit = api.upload_folder(folder_path=str(folder), repo_id=repo, repo_type="dataset", revision=revision,
                               allow_patterns=[r for r, _ in files],
                               commit_message=f"fusionweave build ({', '.join(n for n, _, _ in build_outputs(build))})")
    result["commit"] = getattr(commit, "oid", None) if commit is not None else None
    if folder != out:  # a copy, kept only while an upload may be resumed
        shutil.rmtree(folder, ignore_errors=True)
    return result


def local_copy(out: Loc, files: list[tuple[str, int]]) -> Path:
    """`out` itself when it is local; else the files, copied to a local folder named after it
    (a rerun after a failed upload copies only what is missing or of another size)."""
    folder = store.local_scratch(out)
    if folder == out:
        return folder
    for rel, size in files:
        dst = folder / rel
        if not (dst.is_file() and dst.stat().st_size == size):
            dst.parent.mkdir(parents=True, exist_ok=True)
            with store.open_input(out / rel) as src, store.atomic_path(dst) as tmp, open(tmp, "wb") as f:
                shutil.copyfileobj(src, f, 8 << 20)
    return folder
