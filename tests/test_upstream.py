"""A pipeline reads the one stage it follows, or what the user names; an unfinished or missing
upstream is refused before any work, never replaced by an earlier stage."""
from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from fusionweave.orchestration.build_info import write_build_json
from fusionweave.pipelines.upstream import UpstreamError, input_paths
from tests.helpers import cli, write_recipe


def _stage(out: Path, name: str, complete: bool) -> Path:
    d = out / name
    d.mkdir(parents=True)
    (d / "_manifest.jsonl").write_text(json.dumps({"part": "000000", "shard": None, "count": 0}) + "\n")
    if complete:
        (d / "_stats.json").write_text("{}")
    return d


def test_input_paths() -> None:
    given = [Path("/data/shards")]
    assert input_paths(given, Path("/nowhere"), "select", "perceive") == given


def test_complete_upstream_is_read(tmp_path: Path) -> None:
    sel = _stage(tmp_path, "select", complete=True)
    assert input_paths(None, tmp_path, "select", "perceive") == [sel]


@pytest.mark.parametrize("state", ["missing", "killed"])
def test_no_fallback_to_an_earlier_stage(tmp_path: Path, state: str) -> None:
    _stage(tmp_path, "validate", complete=True)
    if state == "killed":
        _stage(tmp_path, "select", complete=False)
    with pytest.raises(UpstreamError, match="`select` stage, which " + ("is not complete" if state == "killed"
                                                                         else "does not exist")):
        input_paths(None, tmp_path, "select", "perceive")


def test_perceive_after_a_killed_select_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "out"
    write_build_json(out, "curate", {}, 0, ["x"])
    _stage(out, "validate", complete=True)
    _stage(out, "select", complete=False)  # select was killed mid-stage
    cfg = tmp_path / "p.yaml"
    cfg.write_text(yaml.safe_dump({"seed": 0, "perceive": {"tagger": {"model": "m"}, "ovd": {"enabled": False},
                                                           "depth": {"enabled": False}}}))
    r = cli("build", "perceive", "--config", str(cfg), "--out", str(out))
    assert r.returncode == 2, r.stderr
    assert "`select` stage, which is not complete" in r.stderr and "--input" in r.stderr
    assert "Traceback" not in r.stderr
    assert not (out / "perceive").exists()
    assert "perceive" not in json.loads((out / "build.json").read_text())["pipelines"]


def test_input_flag_is_the_recorded_input(tmp_path: Path) -> None:
    p = tmp_path / "in.parquet"
    pq.write_table(pa.table({"URL": ["http://127.0.0.1:1/a.jpg"], "TEXT": ["a"], "WIDTH": [640], "HEIGHT": [480]}), p)
    cfg = write_recipe(tmp_path / "c.yaml", tmp_path / "c.yaml")  # the recipe's own input is replaced
    out = tmp_path / "out"
    r = cli("build", "curate", "--config", str(cfg), "--out", str(out), "--input", str(p), "--stages", "metadata",
            "--no-progress")
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads((out / "build.json").read_text())["pipelines"]["curate"]["metadata"]["input"] == [str(p)]
    r = cli("build", "mcl", "--config", str(cfg), "--out", str(tmp_path / "m"), "--input", str(p))
    assert r.returncode == 2 and "mcl.sources" in r.stderr


def test_the_upstream_read_is_recorded(tmp_path: Path) -> None:
    """perceive (RapidOCR only) with no input reads OUT/select and build.json says so (the config stays as
    given)."""
    import io

    import webdataset as wds
    from PIL import Image

    out = tmp_path / "out"
    write_build_json(out, "select", {}, 0, ["x"])
    sel = out / "select"
    sel.mkdir()
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 10, 10)).save(buf, "JPEG")
    with wds.TarWriter(str(sel / "shard-000000.tar")) as w:
        w.write({"__key__": "k0", "jpg": buf.getvalue(), "json": b"{}"})
    size = (sel / "shard-000000.tar").stat().st_size
    (sel / "_manifest.jsonl").write_text(json.dumps({"part": "000000", "rows_in": 1, "rejected": 0, "count": 1,
                                                     "shard": "shard-000000.tar", "bytes": size}) + "\n")
    (sel / "_stats.json").write_text(json.dumps({"stage": "select", "rows_in": 1, "rows_out": 1, "rejected": 0,
                                                 "balanced": True, "rejects_by_reason": {}, "steps": {}}))
    cfg = tmp_path / "p.yaml"
    off = {"enabled": False}
    cfg.write_text(yaml.safe_dump({"seed": 0, "perceive": {"tagger": off, "detector": off, "ovd": off, "depth": off}}))
    r = cli("build", "perceive", "--config", str(cfg), "--out", str(out), "--no-progress", "--num-cpus", "2")
    assert r.returncode == 0, r.stderr[-3000:]
    info = json.loads((out / "build.json").read_text())
    assert info["inputs"]["perceive"] == [str(sel)]
    assert info["pipelines"]["perceive"]["input"] is None
    assert json.loads((out / "perceive" / "_stats.json").read_text())["rows_out"] == 1
