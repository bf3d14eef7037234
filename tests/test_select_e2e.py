"""The select build end to end on generated shards with a tiny random CLIP: planted identical
images are found, every row is accounted for, bad inputs become rejects, a kill during
embedding resumes to the identical result."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import yaml

from tests.builds import SELECT_STAGES, select_args, select_recipe
from tests.helpers import all_rejects, cli, kill_build_when, manifest_lines, stage_shards, visible_files

pytestmark = pytest.mark.heavy
STAGES = SELECT_STAGES
recipe, build = select_recipe, select_args


@pytest.fixture
def data(select_data: dict) -> dict:
    """The session's select input (tests/builds.py), shared with test_trace_select."""
    return select_data


@pytest.fixture
def reference(select_reference: Path) -> Path:
    """The session's select build of `data` (tests/builds.py), shared read-only with test_trace_select."""
    return select_reference


def keys_in(out: Path) -> list[str]:
    import webdataset as wds

    files = sorted(str(p) for p in (out / "select").glob("shard-*.tar"))
    return [s["__key__"] for s in wds.WebDataset(files, shardshuffle=False)] if files else []


def test_planted_duplicates_and_accounting(data: dict, reference: Path) -> None:
    out = reference
    stats = {s: json.loads((out / s / "_stats.json").read_text()) for s in STAGES}
    for s, st in stats.items():
        assert st["rows_in"] == st["rows_out"] + st["rejected"], s
    assert stats["cluster"]["rows_in"] == stats["embed"]["rows_out"] == stats["select"]["rows_in"]
    # embed: everything that is not a usable image is a reject with its reason
    emb_rej = all_rejects(out, "embed").to_pylist()
    reasons = {r["key"]: r["reason"] for r in emb_rej}
    assert reasons["corrupt"] == reasons["only-corrupt"] == "undecodable" and reasons["no-image"] == "missing_image"
    assert "broken_tar" in reasons.values()
    # select: exactly the planted copies are semantic duplicates, each naming its original
    rej = all_rejects(out, "select").to_pylist()
    dups = {r["key"]: r["detail"] for r in rej if r["reason"] == "semantic_duplicate"}
    assert set(dups) == {k for k in data["planted"] if k not in reasons}
    for copy, detail in dups.items():
        assert detail.startswith(f"duplicate of {data['planted'][copy]} ")
    assert all(r["stage"] == "select" and r["step"] == "semdedup" for r in rej)
    kept = keys_in(out)
    assert len(kept) == stats["select"]["rows_out"] == len(set(kept))
    assert not set(kept) & set(dups)
    # json members carry the cluster; the side table has unit float16 embeddings
    import webdataset as wds

    first = next(iter(wds.WebDataset(str(sorted((out / "select").glob("shard-*.tar"))[0]), shardshuffle=False)))
    meta = json.loads(first["json"])
    assert 0 <= meta["select"]["cluster"] < 3 and 0 <= meta["select"]["centroid_distance"] <= 2
    import pyarrow.parquet as pq

    side = pq.read_table(sorted((out / "embed").glob("shard-*.parquet"))[0])
    field = side.schema.field("embedding")
    assert field.type == pa.binary(64) and field.metadata == {b"dtype": b"float16", b"dim": b"32"}
    from fusionweave.pipelines.select.embed import embeddings_of

    assert np.allclose(np.linalg.norm(embeddings_of(side).astype(np.float32), axis=1), 1, atol=2e-3)
    # report and plot
    info = stats["select"]
    assert info["clusters"] == 3 and sum(info["cluster_size_histogram"].values()) == 3
    assert info["selected"] == stats["select"]["rows_out"]
    assert info["duplicates_by_eps"]["0.0001"] == len(dups)
    assert (out / "select" / "cluster_sizes.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "cluster" / "kmeans.json").read_text())["clusters"] == 3
    report = (out / "report.txt").read_text()
    assert "semantic_duplicate" in report and "stage select" in report
    r = cli("verify", str(out))
    assert r.returncode == 0, r.stderr


def test_top_n_rejects_not_selected(data: dict, tmp_path: Path, engine: object) -> None:
    from fusionweave.orchestration.config import load_recipe
    from fusionweave.pipelines.select import pipeline

    cfg = load_recipe(recipe(data, tmp_path / "s.yaml", top_n__n=2, cluster__clusters=4)).select
    res = pipeline.run(cfg.model_copy(update={"seed": 0}), tmp_path / "out", engine)
    st = res["select"]
    assert st["rows_out"] <= 4 * 2 and st["rows_out"] == st["selected"]
    assert st["rejects_by_reason"]["not_selected"] == st["rows_in"] - st["rows_out"] - st["rejects_by_reason"].get(
        "semantic_duplicate", 0)
    assert st["rows_in"] == st["rows_out"] + st["rejected"]


def test_resume_after_kill_during_embedding(data: dict, reference: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    # one reader at a time (1.5 of 2 CPUs; the model worker has the rest), so parts finish one by one
    args = build(recipe(data, tmp_path / "select.yaml", embed__read_cpus=1.5), out)
    kill_build_when(args, lambda: manifest_lines(out / "embed" / "_manifest.jsonl") >= 2)
    assert not (out / "embed" / "_stats.json").exists(), "the kill came after embedding finished"
    # finished = a part record committed (a worker may have written a shard whose record was not
    # created yet when the kill came: that part is done again, identically)
    recorded = [json.loads(p.read_text())["shard"] for p in sorted((out / "embed" / "_parts").glob("*.json"))]
    before = {n: ((out / "embed" / n).stat().st_mtime_ns, (out / "embed" / n).stat().st_ino) for n in recorded}
    assert before
    r = cli(*args)
    assert r.returncode == 0, r.stderr[-3000:]
    for name, ident in before.items():  # finished side tables were reused, not recomputed
        p = out / "embed" / name
        assert (p.stat().st_mtime_ns, p.stat().st_ino) == ident
    for s in STAGES:
        assert stage_shards(out, s) == stage_shards(reference, s), s
    assert keys_in(out) == keys_in(reference)
    assert not [p for p in visible_files(out) if ".tmp-" in p.name]


def test_errors_before_any_work(data: dict, tmp_path: Path) -> None:
    out = tmp_path / "out"
    r = cli(*build(recipe(data, tmp_path / "a.yaml", cluster__clusters=1000), out))
    assert r.returncode == 2 and "clusters is 1000 but the input holds only" in r.stderr
    assert not (out / "embed").exists()
    r = cli(*build(recipe(data, tmp_path / "b.yaml", embed__model=str(tmp_path / "nowhere")), out))
    assert r.returncode == 2 and "not found; looked in: local path" in r.stderr
    r = cli(*build(recipe(data, tmp_path / "c.yaml", embed__model="someorg/not-cached"), out))
    assert r.returncode == 2 and "Hugging Face cache" in r.stderr
    r = cli(*build(recipe(data, tmp_path / "d.yaml", semdedup__keep="middle"), out))
    assert r.returncode == 2 and "select.semdedup.keep" in r.stderr
    r = cli(*build(recipe(data, tmp_path / "e.yaml", input=None), out))
    assert r.returncode == 2 and "no shards found" in r.stderr
    assert not os.path.exists(out / "embed")


def test_ray_shuffle_and_local_grouping_decide_alike(reference: Path, tmp_path: Path, engine: object) -> None:
    """The per-cluster pass gives the same decisions whether the engine groups the side table in
    the driver (small inputs) or shuffles it on Ray (large ones)."""
    import pyarrow.parquet as pq

    from fusionweave.orchestration.ray_engine import RayEngine
    from fusionweave.pipelines.select.choose import decide_bucket
    from fusionweave.pipelines.storage.published import published_files

    cfg = yaml.safe_load((reference.parent / "select.yaml").read_text())["select"]
    from fusionweave.pipelines.select.config import SelectConfig

    fn = decide_bucket(SelectConfig.model_validate({**cfg, "cluster": {**cfg["cluster"]}}), 0)
    paths = [p for p in sorted((reference / "cluster").glob("shard-*.parquet")) if pq.ParquetFile(p).metadata.num_rows]
    cols = ["key", "part", "idx", "cluster", "distance", "bucket", "embedding"]
    results = {}
    for name, eng in [("local", engine), ("shuffle", RayEngine(local_group_max_rows=0, local_group_max_bytes=0))]:
        eng.group_apply(paths, cols, "bucket", fn, tmp_path / name, desc=name)
        t = pa.concat_tables([pq.read_table(f) for f in published_files(tmp_path / name)])
        results[name] = t.sort_by([("part", "ascending"), ("idx", "ascending")]).to_pylist()
    assert results["local"] == results["shuffle"]
    assert len(results["local"]) == sum(pq.ParquetFile(p).metadata.num_rows for p in paths)
    assert any(r["reason"] == "semantic_duplicate" for r in results["local"])
