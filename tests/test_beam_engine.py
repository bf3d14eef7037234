"""The metadata stage on Apache Beam gives exactly what it gives on Ray."""
from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from fusionweave.orchestration.beam_engine import BeamEngine
from fusionweave.pipelines.curate import metadata
from fusionweave.pipelines.storage.build_folder import PartEntry
from fusionweave.pipelines.fixtures.sample_laion import generate
from tests.conftest import curate_cfg
from tests.helpers import all_rejects, cli, kill_build_when, manifest_lines, write_recipe

pytestmark = pytest.mark.heavy


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("beam-in")
    generate(400, root, seed=3, base_url="http://127.0.0.1:9")
    no_url = root / "no_url.parquet"
    pq.write_table(pa.table({"TEXT": ["a", "b"]}), no_url)
    corrupt = root / "corrupt.parquet"
    corrupt.write_bytes(b"PAR1 nope")
    # rows that pass every filter, repeated with other captions: URL duplicates across files
    t = pq.read_table(root / "laion.parquet")
    ok = pc.and_(pc.and_(pc.less_equal(t["punsafe"], 0.08), pc.less_equal(t["pwatermark"], 0.25)),
                 pc.greater_equal(t["similarity"], 0.3))
    dups = t.filter(ok).slice(0, 6)
    dups = dups.set_column(dups.schema.get_field_index("TEXT"), "TEXT", pa.array(["again"] * dups.num_rows))
    pq.write_table(dups, root / "zz_dups.parquet")
    return [root / "laion.parquet", no_url, corrupt, root / "zz_dups.parquet"]


def every_filter(inputs: list[Path]):
    # thresholds chosen so that every filter rejects something in the generated data
    return curate_cfg(inputs, metadata__max_aspect_ratio=1.6, metadata__max_punsafe=0.08,
                      metadata__max_pwatermark=0.25, metadata__min_similarity=0.3, metadata__rows_per_shard=90)


def kept_rows(out: Path) -> pa.Table:
    files = sorted((out / "metadata").glob("shard-*.parquet"))
    t = pa.concat_tables([pq.read_table(f) for f in files]).sort_by("key")
    # NaN != NaN: compare NaN sizes as nulls
    for i, name in enumerate(t.column_names):
        if pa.types.is_floating(t.column(name).type):
            col = t.column(name)
            t = t.set_column(i, name, pc.if_else(pc.is_nan(col), pa.scalar(None, col.type), col))
    return t


def rejects(out: Path) -> pa.Table:
    return all_rejects(out, "metadata").sort_by([("key", "ascending"), ("reason", "ascending"), ("detail", "ascending")])


@pytest.fixture(scope="module")
def ray_out(engine, inputs, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ray") / "out"
    metadata.run(every_filter(inputs), out, engine)
    return out


def assert_parity(a: Path, b: Path) -> None:
    assert kept_rows(a).equals(kept_rows(b))
    ra, rb = rejects(a), rejects(b)
    assert ra.equals(rb)
    sa = json.loads((a / "metadata" / "_stats.json").read_text())
    sb = json.loads((b / "metadata" / "_stats.json").read_text())
    for k in ("rows_in", "rows_out", "rejected", "rejects_by_reason"):
        assert sa[k] == sb[k], k
    assert {s: (v["rows_in"], v["rows_out"], v["rejects"]) for s, v in sa["steps"].items()} == \
        {s: (v["rows_in"], v["rows_out"], v["rejects"]) for s, v in sb["steps"].items()}


def test_beam_and_ray_agree(ray_out, inputs, tmp_path):
    out = tmp_path / "beam"
    eng = BeamEngine(num_workers=2)
    st = metadata.run(every_filter(inputs), out, eng)
    assert st["engine"] == "BeamEngine" and st["balanced"]
    assert_parity(ray_out, out)
    # every filter case and the URL dedup really were exercised
    assert {"aspect_ratio_too_large", "punsafe_above_max", "pwatermark_above_max", "similarity_below_min",
            "duplicate_url", "missing_columns", "unreadable_parquet", "short_edge_too_small",
            "unsupported_scheme", "private_address"} <= set(st["rejects_by_reason"])
    # the counts in the report are Beam's own metrics, and they agree with the shards
    metrics = eng.step_metrics["metadata: write shards"]
    assert metrics["url_dedup"].rejects["duplicate_url"] == st["rejects_by_reason"]["duplicate_url"]
    # same writers, same rows: even the bytes agree
    for f in sorted((ray_out / "metadata").glob("shard-*.parquet")):
        assert f.read_bytes() == (out / "metadata" / f.name).read_bytes()


def test_beam_killed_mid_stage_then_rerun(ray_out, inputs, tmp_path):
    """Killed early (its work folder just made), rerun and killed again after the filter pass
    committed a part, then rerun to the end: the same shards as the Ray engine's build."""
    cfg = every_filter(inputs)
    recipe = write_recipe(tmp_path / "c.yaml", [Path(p) for p in cfg.metadata.input],
                          metadata={"max_aspect_ratio": 1.6, "max_punsafe": 0.08, "max_pwatermark": 0.25,
                                    "min_similarity": 0.3, "rows_per_shard": 90})
    out = tmp_path / "out"
    args = ["build", "curate", "--config", str(recipe), "--out", str(out), "--stages", "metadata",
            "--engine", "beam", "--no-progress", "--num-cpus", "2"]
    kill_build_when(args, lambda: (out / "metadata" / "_work").exists())
    kill_build_when(args, lambda: manifest_lines(out / "metadata" / "_work" / "pass1" / "_manifest.jsonl") > 0)
    assert not (out / "metadata" / "_stats.json").exists()
    r = cli(*args)
    assert r.returncode == 0, r.stderr[-3000:]
    assert_parity(ray_out, out)
    assert not list((out / "metadata").rglob(".*.tmp-*"))


def test_part_results_reach_the_driver_through_the_build_folder(tmp_path, monkeypatch):
    # a Flink or Dataflow worker cannot write to the driver's disk: given `results_at`, the entries
    # travel as elements to one writer there, and no driver-local folder is made
    import tempfile

    real = tempfile.mkdtemp

    def no_local_folder(*a, **k):  # Beam's runner makes its own temporary folders
        if str(k.get("prefix", "")).startswith("fw-beam-"):
            raise AssertionError("a driver-local results folder was made")
        return real(*a, **k)

    monkeypatch.setattr(tempfile, "mkdtemp", no_local_folder)
    results = tmp_path / "out" / "metadata" / "_work" / "beam"
    items = [{"part": f"p{i}", "rows_in": i + 1, "rejected": 0, "count": i + 1} for i in range(5)]
    # (the part's work: an importable function, as Beam's worker processes unpickle it)
    got = list(BeamEngine(num_workers=1, results_at=results).map_partitions(items, PartEntry.from_json, num_cpus=1,
                                                                           desc="t"))
    assert sorted((e.part, e.rows_in, e.count) for e in got) == [(f"p{i}", i + 1, i + 1) for i in range(5)]
    assert not [p for p in results.rglob("*") if p.is_file()]  # read, then removed
