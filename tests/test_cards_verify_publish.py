"""Dataset cards from real build statistics, `verify`, and `publish` against a loopback Hub."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fusionweave.datasets_cards.card import CardError, render
from fusionweave.datasets_cards.hub_values import size_category
from fusionweave.datasets_cards.verify import verify
from tests.helpers import ROOT, cli, write_recipe
from tests.hub_server import FakeHub

pytestmark = pytest.mark.heavy
STAGES = ["metadata", "download", "validate"]
GOLDEN = Path(__file__).parent / "golden" / "curate_card.md"
TOKEN = "hf_TESTtokenDoNotLeak0123456789"


@pytest.fixture(scope="module")
def build(tmp_path_factory) -> Path:
    from fusionweave.pipelines.fixtures.sample_laion import generate
    from fusionweave.pipelines.fixtures.sample_server import SampleServer

    root = tmp_path_factory.mktemp("card-data")
    out = tmp_path_factory.mktemp("card-build") / "out"
    with SampleServer(root, slow_seconds=12.0) as srv:
        generate(200, root, seed=7, base_url=srv.base_url)
        recipe = write_recipe(root / "c.yaml", root / "laion.parquet")
        data = yaml.safe_load(recipe.read_text())
        data["card"] = {"pretty_name": "fusionweave test build", "license": "cc-by-4.0", "language": ["en"],
                        "task_categories": ["image-to-text"], "tags": ["test"]}
        recipe.write_text(yaml.safe_dump(data))
        r = cli("build", "curate", "--config", str(recipe), "--out", str(out), "--no-progress")
    assert r.returncode == 0, r.stderr[-3000:]
    return out


def copy_of(build: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(build, dst)
    return dst


def normalised(text: str, out: Path) -> str:
    """The card minus what legitimately changes between machines and commits."""
    text = text.replace(str(out.parent), "TMP").replace(str(out), "OUT")
    text = re.sub(r"- /[^\n]*laion\.parquet", "- INPUT", text)
    text = re.sub(r"^Software: .*$", "Software: VERSIONS", text, flags=re.M)
    return text


def test_card_golden(build):
    path = render(build)
    text = path.read_text()
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(normalised(text, build))
    assert normalised(text, build) == GOLDEN.read_text(), "card changed; rerun with UPDATE_GOLDEN=1 if intended"


def test_card_content_is_the_builds(build):
    from huggingface_hub import DatasetCard

    render(build)
    card = DatasetCard.load(build / "README.md")
    meta = card.data.to_dict()
    st = {s: json.loads((build / s / "_stats.json").read_text()) for s in STAGES}
    assert meta["size_categories"] == [size_category(st["validate"]["rows_out"])]
    assert meta["configs"] == [{"config_name": "default", "data_files": [{"split": "train", "path": "validate/shard-*.tar"}]}]
    assert meta["pretty_name"] == "fusionweave test build" and meta["task_categories"] == ["image-to-text"]
    body = card.text
    for s in STAGES:
        assert f"| {s} | {st[s]['rows_in']:,} | {st[s]['rows_out']:,} | {st[s]['rejected']:,} |" in body
    for reason, n in st["validate"]["rejects_by_reason"].items():
        assert f"{reason}: {n:,}" in body
    for member in ("`KEY.jpg`", "`KEY.txt`", "`KEY.json`", "`url`", "`width`", "`sha256`", "`source.similarity`"):
        assert member in body
    assert "LAION" in body and "```bibtex" in body and "min_short_edge: 448" in body
    for png in ("caption_lengths.png", "image_sizes.png", "rejects_by_reason.png"):
        assert (build / "_card" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"(_card/{png})" in body


@pytest.mark.parametrize("n,cat", [(0, "n<1K"), (999, "n<1K"), (1000, "1K<n<10K"), (9_999, "1K<n<10K"),
                                   (1_000_000, "1M<n<10M"), (10**12, "n>1T")])
def test_size_category_boundaries(n, cat):
    assert size_category(n) == cat


@pytest.mark.parametrize("field,value,msg", [("license", "not-a-license", "license"),
                                             ("task_categories", ["painting"], "task_categories")])
def test_invalid_card_metadata_is_an_error(build, tmp_path, field, value, msg):
    out = copy_of(build, tmp_path)
    b = json.loads((out / "build.json").read_text())
    b["card"][field] = value
    (out / "build.json").write_text(json.dumps(b))
    with pytest.raises(CardError, match=msg):
        render(out)
    r = cli("card", str(out))
    assert r.returncode == 1 and msg in r.stderr


def test_datasets_loads_with_the_cards_own_globs(build, tmp_path):
    from datasets import load_dataset
    from huggingface_hub import DatasetCard

    render(build)
    cfg = DatasetCard.load(build / "README.md").data.to_dict()["configs"][0]
    files = {d["split"]: str(build / d["path"]) for d in cfg["data_files"]}
    ds = load_dataset("webdataset", data_files=files, split="train", cache_dir=str(tmp_path / "hf"))
    assert len(ds) == json.loads((build / "validate" / "_stats.json").read_text())["rows_out"]
    assert ds[0]["jpg"].mode == "RGB"


def test_verify_clean_build(build):
    assert verify(build, STAGES) == []
    r = cli("verify", str(build))
    assert r.returncode == 0 and "ok" in r.stdout


def test_verify_catches_each_problem(build, tmp_path):
    out = copy_of(build, tmp_path)
    shard = out / "validate" / "shard-000000.tar"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF  # a flipped byte
    shard.write_bytes(bytes(data))
    (out / "download" / "shard-000001.tar").unlink()  # a missing shard
    shutil.copy(out / "validate" / "shard-000001.tar", out / "validate" / "shard-000099.tar")  # unlisted
    (out / "validate" / ".shard-000100.tar.tmp-1-abc").write_bytes(b"partial")
    lines = (out / "metadata" / "_manifest.jsonl").read_text().splitlines()
    e = json.loads(lines[0])
    e["count"] += 1
    e["rows_in"] += 1
    lines[0] = json.dumps(e)
    (out / "metadata" / "_manifest.jsonl").write_text("\n".join(lines) + "\n")  # a count mismatch
    problems = verify(out, STAGES)
    text = "\n".join(problems)
    assert "validate/shard-000000.tar: sha256 differs" in text
    assert "download/shard-000001.tar: missing" in text
    assert "validate/shard-000099.tar: shard not listed" in text
    assert "validate/.shard-000100.tar.tmp-1-abc: partial file" in text
    assert re.search(r"metadata/shard-000000.parquet: \d+ samples, manifest says \d+", text)
    assert "metadata: _stats.json rows_in" in text
    r = cli("verify", str(out))
    assert r.returncode == 1 and "sha256 differs" in r.stderr


def run_publish(out: Path, hub: FakeHub, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_TOKEN": TOKEN, "HF_HUB_DISABLE_XET": "1", "HF_HUB_OFFLINE": "0",
           "HF_HUB_DISABLE_TELEMETRY": "1"}
    return subprocess.run([sys.executable, "-m", "fusionweave.orchestration.cli", "publish", str(out), *extra], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def test_publish_dry_run_lists_files(build, tmp_path):
    out = copy_of(build, tmp_path)
    (out / "README.md").unlink(missing_ok=True)
    r = cli("publish", str(out), "--repo", "org/name", "--dry-run")
    assert r.returncode == 0, r.stderr
    assert (out / "README.md").exists()  # rendered because it was missing
    listed = {line.split()[-1]: int(line.split()[0].replace(",", "")) for line in r.stdout.splitlines()
              if line.strip() and line.split()[0].replace(",", "").isdigit()}
    for rel in ("README.md", "build.json", "validate/shard-000000.tar", "validate/_manifest.jsonl",
                "metadata/_stats.json", "_card/rejects_by_reason.png"):
        assert listed[rel] == (out / rel).stat().st_size
    assert "download/shard-000000.tar" not in listed  # intermediate shards stay home by default


def test_publish_end_to_end_against_loopback_hub(build, tmp_path):
    out = copy_of(build, tmp_path)
    with FakeHub(TOKEN) as hub:
        r = run_publish(out, hub, "--repo", "org/curated", "--private")
        assert r.returncode == 0, r.stderr[-3000:]
        repo = hub.repos["org/curated"]
        assert repo["private"] is True and repo["type"] == "dataset"
        assert {"README.md", "build.json", "validate/shard-000000.tar", "validate/_manifest.jsonl"} <= set(repo["files"])
        assert hub.uploads > 0 and hub.commits == 1 and hub.unauthorized == 0
        first_uploads = hub.uploads
        # unchanged build: nothing new goes up, and no empty commit is made
        r2 = run_publish(out, hub, "--repo", "org/curated")
        assert r2.returncode == 0, r2.stderr[-3000:]
        assert hub.uploads == first_uploads and hub.commits == 1
        for text in (r.stdout, r.stderr, r2.stdout, r2.stderr):
            assert TOKEN not in text


def test_publish_refuses_a_build_that_fails_verify(build, tmp_path):
    out = copy_of(build, tmp_path)
    (out / "validate" / "shard-000000.tar").write_bytes(b"garbage")
    with FakeHub(TOKEN) as hub:
        r = run_publish(out, hub, "--repo", "org/bad")
        assert r.returncode == 1 and "refusing to publish" in r.stderr
        assert hub.repos == {} and hub.uploads == 0


def test_pipelines_keep_the_order_they_ran_in(tmp_path: Path) -> None:
    """build.json's keys are sorted; cards, verify and reports need curate -> select -> perceive."""
    from fusionweave.datasets_cards.card import build_outputs
    from fusionweave.orchestration.build_info import write_build_json

    for name, stages in [("curate", ["metadata", "validate"]), ("select", ["embed", "select"]),
                         ("perceive", ["perceive"]), ("select", ["embed", "select"])]:  # a rerun keeps its place
        write_build_json(tmp_path, name, {"x": 1}, 0, [], stages=stages)
    build = json.loads((tmp_path / "build.json").read_text())
    assert [n for n, _, _ in build_outputs(build)] == ["curate", "select", "perceive"]
