"""Download and validate fused into one pass per part (the default): the same curated shards and
the same rejects as the two-stage build that keeps the download's shards, with no raw copy."""
from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.helpers import cli, kill_build_when, manifest_lines, write_recipe

pytestmark = pytest.mark.heavy


def rejects(out: Path, stages: list[str]) -> list[tuple]:
    files = [f for s in stages for f in sorted((out / s / "_rejects").glob("*.parquet"))]
    t = pa.concat_tables([pq.read_table(f) for f in files])
    return sorted(zip(*(t.column(c).to_pylist() for c in ("key", "step", "reason", "detail", "url"))),
                  key=lambda r: tuple(str(v) for v in r))


def stats(out: Path, stage: str) -> dict:
    return json.loads((out / stage / "_stats.json").read_text())


def test_fused_pass_gives_the_two_stage_shards_and_rejects(curate_reference: Path, sample_data, tmp_path: Path):
    """Killed (SIGKILL) once two parts had downloaded and decoded, then resumed: the end is the
    two-stage build's, byte for byte."""
    root, _, _ = sample_data
    recipe = write_recipe(tmp_path / "fused.yaml", root / "laion.parquet", download={"keep_shards": False})
    out = tmp_path / "out"
    args = ["build", "curate", "--config", str(recipe), "--out", str(out), "--no-progress"]
    kill_build_when(args, lambda: manifest_lines(out / "validate/_work/pass1/_manifest.jsonl") >= 2)
    assert not (out / "validate" / "_stats.json").exists(), "the kill came after validate finished"
    r = cli(*args)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "UNBALANCED" not in r.stdout
    assert not (out / "download").exists()  # no raw copy written

    ours, ref = sorted((out / "validate").glob("*.tar")), sorted((curate_reference / "validate").glob("*.tar"))
    assert ref and [p.name for p in ours] == [p.name for p in ref]
    for a, b in zip(ours, ref):
        assert a.read_bytes() == b.read_bytes(), a.name
    # every row the two stages dropped is dropped here, for the same step and reason
    assert rejects(out, ["validate"]) == rejects(curate_reference, ["download", "validate"])
    # and counted: validate reads the metadata stage's rows itself
    assert stats(out, "validate")["rows_in"] == stats(curate_reference, "download")["rows_in"]
    assert stats(out, "validate")["rows_out"] == stats(curate_reference, "validate")["rows_out"]
    assert json.loads((out / "build.json").read_text())["outputs"]["curate"]["stages"] == ["metadata", "validate"]


def test_download_alone_is_refused_when_its_shards_are_not_kept(sample_data, tmp_path: Path):
    root, _, _ = sample_data
    recipe = write_recipe(tmp_path / "fused.yaml", root / "laion.parquet", download={"keep_shards": False})
    r = cli("build", "curate", "--config", str(recipe), "--out", str(tmp_path / "out"), "--stages", "metadata,download")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "curate.download.keep_shards" in r.stderr
