"""The perceive build end to end on Ray with all five experts (tiny random tagger, YOLO from its
YAML, OWLv2 and depth; real RapidOCR): every sample gets a valid experts.json and depth.png,
bad samples become rejects or per-expert errors, rows balance, and a kill mid-stage resumes to
the identical result."""
from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from tests.builds import perceive_args, perceive_recipe
from tests.helpers import all_rejects, cli, kill_build_when, manifest_lines, stage_shards, visible_files

pytestmark = pytest.mark.heavy
recipe, build = perceive_recipe, perceive_args


@pytest.fixture
def data(perceive_data: dict) -> dict:
    """The session's perceive input and tiny models (tests/builds.py), shared with test_view_perceive."""
    return perceive_data


@pytest.fixture
def reference(perceive_reference: Path) -> Path:
    """The session's perceive build of `data` (tests/builds.py), shared read-only with test_view_perceive."""
    return perceive_reference


def members(out: Path, by_shard: bool = False) -> dict[str, dict[str, bytes]]:
    found: dict[str, dict[str, bytes]] = {}
    for shard in sorted((out / "perceive").glob("shard-*.tar")):
        with tarfile.open(shard) as tf:
            for m in tf.getmembers():
                key, ext = m.name.split(".", 1)
                found.setdefault(f"{shard.name}/{key}" if by_shard else key, {})[ext] = tf.extractfile(m).read()
    return found


def test_every_sample_carries_the_experts(reference: Path) -> None:
    stats = json.loads((reference / "perceive" / "_stats.json").read_text())
    assert stats["rows_in"] == stats["rows_out"] + stats["rejected"] and stats["balanced"]
    got = members(reference)
    assert len(got) == stats["rows_out"] and "corrupt" not in got and "no-image" not in got
    assert "truncated-png" in got  # readable header, unreadable pixels: kept, with every expert's error
    reasons = {r["key"]: r["reason"] for r in all_rejects(reference, "perceive").to_pylist()}
    assert reasons["corrupt"] == "undecodable" and reasons["no-image"] == "missing_image"
    assert "broken_tar" in reasons.values()
    for key, m in got.items():
        assert {"png", "txt", "json", "experts.json"} <= set(m), key  # input members kept
        doc = json.loads(m["experts.json"])
        assert doc["schema"] == "fusionweave.experts/1"
        assert set(doc["experts"]) == {"tagger", "detector", "ovd", "ocr", "depth"}
        for name, x in doc["experts"].items():
            assert {"model", "revision", "settings", "results", "seconds", "error"} <= set(x), name
        if key == "truncated-png":
            assert all(x["error"] and x["results"] is None for x in doc["experts"].values())
            assert "depth.png" not in m
            continue
        assert all(x["error"] is None for x in doc["experts"].values()), key
        assert 1 <= len(doc["experts"]["tagger"]["results"]) <= 3
        assert len(doc["detections"]) <= 8
        for d in doc["detections"]:
            assert all(0 <= v <= 1 and round(v, 3) == v for v in d["box"])
        assert {x["text"].replace(" ", "") for x in doc["experts"]["ocr"]["results"]} == {"OPENDATA"}
        depth = Image.open(io.BytesIO(m["depth.png"]))
        assert depth.size == (480, 320) and np.asarray(depth).dtype == np.uint16
        assert len(doc["experts"]["depth"]["results"]["objects"]) == len(doc["detections"])
    assert stats["expert_errors"] == {n: 1 for n in ("depth", "detector", "ocr", "ovd", "tagger")}
    assert "expert errors (samples kept, error in experts.json): depth 1, detector 1" in \
        (reference / "report.txt").read_text()


def test_shards_read_back_with_webdataset(reference: Path) -> None:
    import webdataset as wds

    files = sorted(str(p) for p in (reference / "perceive").glob("shard-*.tar"))
    n = sum(1 for s in wds.WebDataset(files, shardshuffle=False) if "experts.json" in s)
    assert n == json.loads((reference / "perceive" / "_stats.json").read_text())["rows_out"]


def test_missing_model_fails_before_work(data: dict, tmp_path: Path) -> None:
    cfg = yaml.safe_load(recipe(data, tmp_path / "p.yaml").read_text())
    cfg["perceive"]["depth"]["model"] = str(tmp_path / "no-such-depth-model")
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(cfg))
    r = cli(*build(tmp_path / "bad.yaml", tmp_path / "out"))
    assert r.returncode == 2 and "no-such-depth-model" in r.stderr and "looked in" in r.stderr
    assert not (tmp_path / "out" / "perceive").exists()
    cfg["perceive"]["depth"]["model"] = ""
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(cfg))
    r = cli(*build(tmp_path / "bad.yaml", tmp_path / "out"))
    assert r.returncode == 2 and "model is required" in r.stderr


PARTS = 12


def test_kill_mid_stage_resumes_to_the_same_result(data: dict, reference: Path, tmp_path: Path) -> None:
    import shutil

    # enough parts that the kill lands between them: parts can finish in bursts, and a killed
    # build's Ray workers may still commit the part they hold before they notice
    many = tmp_path / "many"
    many.mkdir()
    for i in range(PARTS):
        shutil.copy(data["folder"] / f"in-0{i % 3}.tar", many / f"in-{i:02d}.tar")
    out = tmp_path / "out"
    cfg = recipe(data, tmp_path / "perceive.yaml", many)
    manifest = out / "perceive" / "_manifest.jsonl"
    kill_build_when(build(cfg, out), lambda: manifest_lines(manifest) >= 2)
    assert 2 <= manifest_lines(manifest) < PARTS
    r = cli(*build(cfg, out))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "already done, resuming" in r.stderr
    # part i copies the session's input i % 3, so its shard must hold what the uninterrupted
    # reference build wrote for that input: the same members, experts.json equal but for seconds
    a, b = members(out, by_shard=True), members(reference, by_shard=True)
    assert len({k.split("/")[0] for k in a}) == PARTS
    for key in a:
        shard, sample = key.split("/")
        twin = f"shard-{int(shard[6:12]) % 3:06d}.tar/{sample}"
        assert a[key].keys() == b[twin].keys(), key
        for ext in a[key]:
            if ext == "experts.json":
                assert untimed(a[key][ext]) == untimed(b[twin][ext]), key
            else:
                assert a[key][ext] == b[twin][ext], (key, ext)
    assert not [p for p in visible_files(out) if ".tmp-" in p.name]


def untimed(raw: bytes) -> dict:
    doc = json.loads(raw)
    for x in doc["experts"].values():
        x.pop("seconds")
    return doc
