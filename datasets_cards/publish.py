"""`fusionweave publish OUT --repo ORG/NAME`: verified builds only, to a Hub dataset repo."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fusionweave.datasets_cards.card import build_outputs, render
from fusionweave.datasets_cards.verify import verify
from fusionweave.pipelines.build_folder import MANIFEST, STATS


class PublishError(RuntimeError):
    pass


def publish_files(out: Path, include_intermediate: bool = False) -> list[tuple[str, int]]:
    """What a publish uploads: the card and its plots, build.json and the report, every stage's
    manifest, stats and rejects, and the final stage's shards (intermediate shards on request)."""
    build = json.loads((out / "build.json").read_text())
    finals = {final for _, _, final in build_outputs(build)}
    rels: list[str] = ["README.md", "build.json", "report.json", "report.txt"]
    rels += [str(p.relative_to(out)) for p in sorted((out / "_card").glob("*.png"))]
    for stage_dir in sorted(p.parent for p in out.glob(f"*/{MANIFEST}")):
        s = stage_dir.name
        rels += [f"{s}/{MANIFEST}", f"{s}/{STATS}"]
        rels += [str(p.relative_to(out)) for p in sorted((stage_dir / "_rejects").glob("*.parquet"))]
        if (stage_dir / STATS).exists():  # a stage's own small outputs (exports, stage manifests)
            rels += [f"{s}/{f}" for f in json.loads((stage_dir / STATS).read_text()).get("files", [])]
        if s in finals or include_intermediate:
            rels += [str(p.relative_to(out)) for p in sorted(stage_dir.rglob("shard-*.tar")) if p.is_file()]
    return [(r, (out / r).stat().st_size) for r in rels if (out / r).exists()]


def publish(out: str | Path, repo: str, *, private: bool = False, revision: str | None = None,
            dry_run: bool = False, include_intermediate: bool = False, token: str | None = None) -> dict[str, Any]:
    out = Path(out)
    if not (out / "build.json").exists():
        raise PublishError(f"{out} is not a fusionweave build folder (no build.json)")
    build = json.loads((out / "build.json").read_text())
    order = [s for _, stages, _ in build_outputs(build) for s in stages]
    problems = verify(out, order)
    if problems:
        raise PublishError("refusing to publish a build that fails verify:\n  " + "\n  ".join(problems))
    if not (out / "README.md").exists():
        render(out)
    files = publish_files(out, include_intermediate)
    result: dict[str, Any] = {"repo": repo, "files": files, "bytes": sum(s for _, s in files)}
    if dry_run:
        return result
    from huggingface_hub import DatasetCard, HfApi

    # the token comes from HF_TOKEN or the huggingface_hub login; it is never printed or logged here
    api = HfApi(token=token)
    DatasetCard.load(out / "README.md").validate(repo_type="dataset")
    api.create_repo(repo, repo_type="dataset", private=private, exist_ok=True)
    if revision:
        api.create_branch(repo, branch=revision, repo_type="dataset", exist_ok=True)
    # huggingface_hub 2.x's upload_folder is the resumable large-folder upload: a rerun skips
    # files the repo already holds (same oid) and re-sends nothing the storage already has
    commit = api.upload_folder(folder_path=str(out), repo_id=repo, repo_type="dataset", revision=revision,
                               allow_patterns=[r for r, _ in files],
                               commit_message=f"fusionweave build ({', '.join(n for n, _, _ in build_outputs(build))})")
    result["commit"] = getattr(commit, "oid", None) if commit is not None else None
    return result
