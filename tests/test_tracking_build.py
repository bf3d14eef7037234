"""The tracking build: the three layouts' adapters, planted bad sequences as rejects with their
reasons, bad recipes refused in a line, and (heavy) the CLI build killed and resumed to the
same shards."""
from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest

from fusionweave.pipelines.errors import BuildSetupError
from fusionweave.pipelines.tracking.config import TrackingConfig
from fusionweave.pipelines.tracking.pipeline import check, sequence_part
from fusionweave.pipelines.tracking.synthetic import PLANTED, generate
from tests.helpers import cli, kill_build_when, manifest_lines, stage_shards


def config(root: Path, layout: str = "lasot", split: str | None = None, **kw: object) -> TrackingConfig:
    return TrackingConfig(sources=[{"name": "syn", "layout": layout, "root": str(root), "split": split, **kw}])


@pytest.fixture(scope="module")
def lasot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("lasot")
    generate(root, "lasot", easy=1, hard=1, frames=16, size=64, bad=True)
    return root


def results(cfg: TrackingConfig) -> dict[str, object]:
    return {p["sequence"]: sequence_part(cfg, p) for p in check(cfg, None)}


def test_planted_bad_sequences_are_rejects_with_reasons(lasot: Path) -> None:
    got = results(config(lasot))
    for name, reason in PLANTED.items():
        r = got[name]
        assert r.samples is None and r.extra["status"] == reason
        assert r.rejects.num_rows == r.rows_in == 16  # every frame the ground truth claims
        assert set(r.rejects.column("reason").to_pylist()) == {reason}
    assert "frame 8 is missing" in got["bad-1"].rejects.column("detail")[0].as_py()
    assert "16 ground-truth boxes for 15 frames" in got["bad-5"].rejects.column("detail")[0].as_py()
    kept = got["hard-1"]
    samples = list(kept.samples)
    assert [s["json"]["frame"] for s in samples] == list(range(16))  # in order
    assert samples[0]["__key__"] == "syn-hard-1_00000000" and samples[0]["jpg"][:2] == b"\xff\xd8"
    meta = samples[0]["json"]
    assert meta["width"] == meta["height"] == 64 and len(meta["box"]) == 4 and meta["class"] == "hard"
    occluded = [s["json"]["full_occlusion"] for s in samples]
    assert sum(occluded) == 2 and [s["json"]["visible"] for s in samples] == [not o for o in occluded]


def test_got10k_and_trackingnet_layouts(tmp_path: Path) -> None:
    generate(tmp_path / "got", "got10k", easy=1, hard=1, frames=14, size=64)
    got = results(config(tmp_path / "got", "got10k", "train"))
    hard = list(got["hard-1"].samples)
    assert [s["json"]["cover"] for s in hard] == [0 if s["json"]["absence"] else 8 for s in hard]
    assert hard[0]["json"]["meta"]["object_class"] == "synthetic"
    meta = tmp_path / "got" / "train" / "hard-1" / "meta_info.ini"  # GOT-10k's urls hold '%'
    meta.write_text("[METAINFO]\nurl: https://youtu.be/a%20b\nresolution: (64, 64)\n")
    assert list(results(config(tmp_path / "got", "got10k", "train"))["hard-1"].samples)[0]["json"]["meta"]["url"] \
        == "https://youtu.be/a%20b"
    meta.write_text("[METAINFO\nbroken")
    assert results(config(tmp_path / "got", "got10k", "train"))["hard-1"].extra["status"] == "unparsable_annotation"
    # the test split's ground truth: its first line only -> later frames carry no box
    seq = tmp_path / "got" / "train" / "easy-1"
    (seq / "groundtruth.txt").write_text((seq / "groundtruth.txt").read_text().splitlines()[0] + "\n")
    easy = list(results(config(tmp_path / "got", "got10k", "train"))["easy-1"].samples)
    assert easy[0]["json"]["box"] is not None and all(s["json"]["box"] is None for s in easy[1:])

    generate(tmp_path / "tn", "trackingnet", easy=1, hard=0, frames=12, size=64)
    tn = results(config(tmp_path / "tn", "trackingnet"))
    assert [s["json"]["frame"] for s in tn["easy-1"].samples] == list(range(12))


def test_unreadable_files_are_rejects(lasot: Path, tmp_path: Path) -> None:
    import shutil

    root = tmp_path / "l"
    shutil.copytree(lasot / "easy", root / "easy")
    seq = root / "easy" / "easy-1"
    (seq / "img" / "00000003.jpg").write_bytes(b"not a jpeg")
    assert results(config(root))["easy-1"].extra["status"] == "unreadable_frame"
    (seq / "groundtruth.txt").write_text("1,2,three,4\n")
    r = results(config(root))["easy-1"]
    assert r.extra["status"] == "unparsable_annotation" and "line 1" in r.rejects.column("detail")[0].as_py()
    (seq / "groundtruth.txt").unlink()
    assert results(config(root))["easy-1"].extra["status"] == "missing_annotation"


def test_bad_recipes_fail_in_a_line(lasot: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from fusionweave.orchestration.cli import main

    with pytest.raises(BuildSetupError, match="not a folder"):
        check(config(tmp_path / "nowhere"), None)
    with pytest.raises(BuildSetupError, match="not found: \\['nope-1'\\]"):
        check(config(lasot, sequences=["nope-1"]), None)
    with pytest.raises(BuildSetupError, match="testing_set.txt"):
        check(config(lasot, split="testing"), None)
    (tmp_path / "empty").mkdir()
    with pytest.raises(BuildSetupError, match="no lasot sequence"):
        check(config(tmp_path / "empty"), None)
    recipe = tmp_path / "r.yaml"
    recipe.write_text("tracking:\n  sources: [{name: a, layout: vot, root: /x}]\n")
    assert main(["build", "tracking", "--config", str(recipe), "--out", str(tmp_path / "o")]) == 2
    assert "tracking.sources.0.layout" in capsys.readouterr().err
    assert main(["tracking-data", "synthetic", "--out", str(tmp_path / "g"), "--layout", "got10k", "--bad"]) == 2
    assert "LaSOT layout" in capsys.readouterr().err


def frames_of(tar: Path) -> list[dict]:
    with tarfile.open(tar) as t:
        return [json.load(t.extractfile(m)) for m in t.getmembers() if m.name.endswith(".json")]


@pytest.mark.heavy
def test_cli_build_rejects_and_kill_resume(tmp_path: Path) -> None:
    data = tmp_path / "data"
    r = cli("tracking-data", "synthetic", "--out", str(data), "--easy", "12", "--hard", "12", "--frames", "40",
            "--size", "160", "--bad")
    assert r.returncode == 0, r.stderr[-2000:]
    recipe = str(data / "tracking.yaml")
    ref = tmp_path / "ref"
    r = cli("build", "tracking", "--config", recipe, "--out", str(ref), "--no-progress", "--num-cpus", "2")
    assert r.returncode == 0, r.stderr[-2000:]
    stats = json.loads((ref / "tracking" / "_stats.json").read_text())
    assert stats["balanced"] and stats["tracking"]["kept"] == 24 and stats["shards"] == 24
    assert stats["tracking"]["rejected_by_reason"] == {"box_outside_image": 1, "invalid_box": 2, "length_mismatch": 1,
                                                       "missing_frame": 1}
    assert stats["rows_out"] == 24 * 40 and stats["rejected"] == 5 * 40
    assert [f["frame"] for f in frames_of(ref / "tracking" / "synthetic-easy-1.tar")] == list(range(40))

    out = tmp_path / "out"
    args = ["build", "tracking", "--config", recipe, "--out", str(out), "--no-progress", "--num-cpus", "1"]
    kill_build_when(args, lambda: manifest_lines(out / "tracking" / "_manifest.jsonl") >= 3)
    assert not (out / "tracking" / "_stats.json").exists()
    committed = {p.name: p.stat().st_mtime_ns for p in (out / "tracking").glob("*.tar")
                 if (out / "tracking" / "_parts" / (p.stem + ".json")).exists()}
    r = cli(*args)
    assert r.returncode == 0, r.stderr[-2000:]
    assert {n: (out / "tracking" / n).stat().st_mtime_ns for n in committed} == committed  # not redone
    assert stage_shards(out, "tracking") == stage_shards(ref, "tracking")
    assert json.loads((out / "tracking" / "_stats.json").read_text())["tracking"] == stats["tracking"]
