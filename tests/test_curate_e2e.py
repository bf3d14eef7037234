"""`fusionweave build curate` on 1,000 generated samples served on 127.0.0.1."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import webdataset as wds

from tests.builds import CURATE_STAGES
from tests.helpers import all_rejects, cli, kill_build_when, manifest_lines, stage_shards, visible_files

pytestmark = pytest.mark.heavy
STAGES = CURATE_STAGES


@pytest.fixture
def recipe(curate_recipe: Path) -> Path:
    return curate_recipe


@pytest.fixture
def reference(curate_reference: Path) -> Path:
    """The session's curate build of the sample rows (tests/builds.py), shared read-only with test_trace_curate."""
    return curate_reference


def keys_of(out: Path) -> list[str]:
    files = sorted(str(p) for p in (out / "validate").glob("shard-*.tar"))
    return [s["__key__"] for s in wds.WebDataset(files, shardshuffle=False)]


def test_every_row_accounted_for(reference, sample_data):
    _, planted, _ = sample_data
    rows_in = 1000
    for stage in STAGES:
        st = json.loads((reference / stage / "_stats.json").read_text())
        assert st["rows_in"] == rows_in, stage
        assert st["rows_in"] == st["rows_out"] + st["rejected"], stage
        rej = all_rejects(reference, stage)
        assert (rej.num_rows if rej is not None else 0) == st["rejected"], stage
        shards = [json.loads(x) for x in (reference / stage / "_manifest.jsonl").read_text().splitlines()]
        assert sum(e["count"] for e in shards) == st["rows_out"], stage
        for step in st["steps"].values():
            assert step["rows_in"] == step["rows_out"] + sum(step["rejects"].values())
        rows_in = st["rows_out"]
    report = json.loads((reference / "report.json").read_text())
    assert list(report) == STAGES


def test_every_planted_case_rejected_with_its_reason(reference, sample_data):
    _, planted, _ = sample_data
    got = Counter()
    by_url: dict[str, set[str]] = {}
    for stage in STAGES:
        rej = all_rejects(reference, stage)
        for r in rej.to_pylist():
            got[r["reason"]] += 1
            by_url.setdefault(r["url"], set()).add(r["reason"])
            assert r["key"] and r["stage"] == stage and r["step"]
    assert got == Counter({reason: len(urls) for reason, urls in planted.items()})
    for reason, urls in planted.items():
        for u in urls:
            assert reason in by_url.get(u, set()), (reason, u)


def test_output_loads_with_webdataset_datasets_and_ray(reference, engine):
    files = sorted(str(p) for p in (reference / "validate").glob("shard-*.tar"))
    st = json.loads((reference / "validate" / "_stats.json").read_text())
    samples = list(wds.WebDataset(files, shardshuffle=False).decode("pil"))
    assert len(samples) == st["rows_out"]
    s = samples[0]
    assert s["jpg"].mode == "RGB" and min(s["jpg"].size) >= 448
    meta = s["json"]
    assert {"url", "width", "height", "sha256", "phash", "source"} <= set(meta)
    assert (meta["width"], meta["height"]) == s["jpg"].size

    from datasets import load_dataset

    ds = load_dataset("webdataset", data_files={"train": files}, split="train",
                      cache_dir=str(reference.parent / "hf-cache"))
    assert len(ds) == st["rows_out"] and ds[0]["jpg"].size[0] > 0 and ds[0]["txt"]

    import ray

    assert ray.data.read_webdataset(files).count() == st["rows_out"]
    assert len(set(keys_of(reference))) == st["rows_out"]


def test_sigkills_then_resume_match_an_uninterrupted_build(reference, recipe, tmp_path):
    """One build killed at three points in turn (in download, in validate's first pass, in its
    second), each rerun resuming the last one's leftovers; the end must be byte-identical to the
    session's uninterrupted build, which also shows that the same config gives the same bytes.
    (One chain instead of three separate kill tests: each of those rebuilt everything.)"""
    out = tmp_path / "killed"
    args = ["build", "curate", "--config", str(recipe), "--out", str(out), "--no-progress"]
    for stage, marker in (("download", "download/_manifest.jsonl"),
                          ("validate", "validate/_work/pass1/_manifest.jsonl"),
                          ("validate", "validate/_manifest.jsonl")):
        kill_build_when(args, lambda: manifest_lines(out / marker) >= 2)
        assert not (out / stage / "_stats.json").exists(), f"the kill came after {stage} finished"
    r = cli(*args)
    assert r.returncode == 0, r.stderr[-3000:]
    for s in STAGES:
        assert stage_shards(out, s) == stage_shards(reference, s), s
    keys = keys_of(out)
    assert len(keys) == len(set(keys)) == len(keys_of(reference))
    assert not [p for p in visible_files(out) if ".tmp-" in p.name]
    for s in STAGES:
        a = json.loads((out / s / "_stats.json").read_text())
        b = json.loads((reference / s / "_stats.json").read_text())
        assert (a["rows_in"], a["rows_out"], a["rejects_by_reason"]) == (b["rows_in"], b["rows_out"], b["rejects_by_reason"])
