"""The storage layer on local disk and on an S3-compatible server (moto, 127.0.0.1): URIs, the
commit primitives, the lease, and the one line a store's failure becomes."""
from __future__ import annotations

import errno
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

from fusionweave.orchestration.cli import io_failure
from fusionweave.orchestration.config import paths_in, with_absolute_paths
from fusionweave.pipelines.storage import store
from fusionweave.pipelines.storage.build_folder import PartEntry, StageFolder
from fusionweave.pipelines.storage.filesystems import StorageConfigError, parse_options, redacted
from fusionweave.pipelines.storage.lease import Lease, LeaseHeld
from fusionweave.pipelines.storage.location import ObjectPath, location
from fusionweave.pipelines.storage.published import publish_folder, published_files
from tests.s3_server import BUCKET, moto_s3


@pytest.fixture(scope="module")
def s3() -> Iterator[dict[str, str]]:
    with moto_s3() as env, pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        yield env


@pytest.fixture(params=["local", "s3"])
def root(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path | ObjectPath]:
    if request.param == "local":
        yield tmp_path / "root"
    else:
        request.getfixturevalue("s3")
        yield ObjectPath(f"s3://{BUCKET}/{request.node.name.replace('[', '-').rstrip(']')}")


def test_uris_stay_uris() -> None:
    p = location("s3://fw-test//out/")
    assert isinstance(p, ObjectPath) and str(p) == "s3://fw-test/out" and p.bucket == "fw-test"
    assert str(p / "validate" / "shard-000000.tar") == "s3://fw-test/out/validate/shard-000000.tar"
    assert (p / "a.tar").stem == "a" and (p / "a").parent == p and p.parent.parent == p.parent
    assert location("file:///tmp/x") == Path("/tmp/x") and location("rel/x") == Path("rel/x")
    with pytest.raises(ValueError, match="without '.' or '..'"):
        ObjectPath("s3://b/../x")


def test_a_config_keeps_uris_and_makes_paths_absolute(tmp_path: Path, s3: dict[str, str],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    from fusionweave.pipelines.select.config import SelectConfig

    store.put_bytes(ObjectPath(f"s3://{BUCKET}/in/shard-000000.tar"), b"x")
    (tmp_path / "local").mkdir()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValidationError, match=f"input path does not exist: s3://{BUCKET}/missing"):
        SelectConfig.model_validate({"embed": {"model": "m"}, "input": [f"s3://{BUCKET}/missing"]})
    cfg = with_absolute_paths(SelectConfig.model_validate(
        {"embed": {"model": "m"}, "input": [f"s3://{BUCKET}/in", "local"]}))
    assert cfg.input == [ObjectPath(f"s3://{BUCKET}/in"), tmp_path / "local"]
    assert cfg.model_dump(mode="json")["input"] == [f"s3://{BUCKET}/in", str(tmp_path / "local")]
    assert ObjectPath(f"s3://{BUCKET}/in") in paths_in(cfg)
    assert not (tmp_path / "s3:").exists()


def test_commits_are_whole_and_a_record_is_created_once(root: Path | ObjectPath) -> None:
    with store.atomic_path(root / "a" / "x.bin") as tmp:
        tmp.write_bytes(b"1" * 1000)
        assert not store.exists(root / "a" / "x.bin")  # nothing visible before the commit
    assert store.read_bytes(root / "a" / "x.bin") == b"1" * 1000
    with pytest.raises(RuntimeError), store.atomic_path(root / "a" / "y.bin") as tmp:
        tmp.write_bytes(b"partial")
        raise RuntimeError("the writer failed")
    assert not store.exists(root / "a" / "y.bin")
    assert store.create(root / "rec.json", b"first") and not store.create(root / "rec.json", b"late")
    assert store.read_bytes(root / "rec.json") == b"first"
    assert [str(p) for p in store.glob(root, "*/x.bin")] == [str(root / "a" / "x.bin")]
    assert store.files(root, recursive=True) == {"a/x.bin": 1000, "rec.json": 5}
    store.delete_tree(root / "a")
    assert store.files(root) == {"rec.json": 5}


def test_a_late_duplicate_never_replaces_a_recorded_part(root: Path | ObjectPath) -> None:
    folder = StageFolder(root, "s")
    first = PartEntry("000000", 2, 0, count=2, extra={"run": 1})
    assert folder.record(first) is first
    assert folder.record(PartEntry("000000", 2, 0, count=2, extra={"run": 2})).extra == {"run": 1}
    assert folder.entries()["000000"].extra == {"run": 1}
    stats = folder.finish(folder.entries().values())
    assert stats["rows_in"] == 2 and store.files(folder.dir) == {"_manifest.jsonl": store.size(folder.manifest_path),
                                                                 "_stats.json": store.size(folder.stats_path)}


def test_a_published_folder_is_seen_whole_or_not_at_all(root: Path | ObjectPath) -> None:
    final = root / "_work" / "dups"
    with pytest.raises(RuntimeError), publish_folder(final) as tmp:
        store.put_bytes(tmp / "a.parquet", b"x")
        raise RuntimeError("killed")
    assert published_files(final) == []
    with publish_folder(final) as tmp:
        store.put_bytes(tmp / "a.parquet", b"x")
    assert [p.name for p in published_files(final)] == ["a.parquet"]


def test_one_writer_per_build_folder(root: Path | ObjectPath) -> None:
    with Lease(root, ttl=60) as first:
        with pytest.raises(LeaseHeld, match="being written by another build .* one build writes a folder at a time"):
            Lease(root).acquire()
        assert first.gen == 0
    with Lease(root) as again:  # released: the next build takes the next generation
        assert again.gen == 1
    # a holder that is gone (a killed build on this machine) is taken over at once
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    rec = json.loads(store.read_bytes(root / "_lease" / "0000000001.json"))
    store.put_bytes(root / "_lease" / "0000000001.json", json.dumps(
        {**rec, "pid": int(dead.stdout), "released": False, "expires": time.time() + 600}).encode())
    with Lease(root) as taken:
        assert taken.gen == 2
    # one of another machine is waited for until it lapses
    store.put_bytes(root / "_lease" / "0000000002.json", json.dumps(
        {**rec, "machine": "elsewhere/0", "released": False, "expires": time.time() + 600}).encode())
    with pytest.raises(LeaseHeld, match="when its lease lapses"):
        Lease(root).acquire()
    store.put_bytes(root / "_lease" / "0000000002.json", json.dumps(
        {**rec, "machine": "elsewhere/0", "released": False, "expires": time.time() - 1}).encode())
    Lease(root).acquire().release()


def test_storage_options_are_checked_and_secrets_never_recorded() -> None:
    assert parse_options(["endpoint_override=127.0.0.1:9000", "s3.scheme=http", "memory.x=1"]) == {
        "endpoint_override": "127.0.0.1:9000", "s3.scheme": "http", "memory.x": "1"}
    with pytest.raises(StorageConfigError, match="endpoint_overide: not a storage option; known: .*endpoint_override"):
        parse_options(["endpoint_overide=x"])
    with pytest.raises(StorageConfigError, match="expects KEY=VALUE"):
        parse_options(["region"])
    assert redacted(["fw", "--storage-option", "secret_key=abc", "--storage-option=s3.access_key=k",
                     "--storage-option", "region=eu"]) == [
        "fw", "--storage-option", "secret_key=***", "--storage-option=s3.access_key=***", "--storage-option", "region=eu"]


def test_a_store_failure_is_one_line() -> None:
    err = store.StorageError(errno.EIO, "cannot reach http://127.0.0.1:9 (AWS Error NETWORK_CONNECTION)",
                             "s3://b/out/validate/shard-000001.tar")
    assert io_failure(err) == ("I/O error in s3://b/out/validate: cannot reach http://127.0.0.1:9 "
                               "(AWS Error NETWORK_CONNECTION)")
    # raised inside a library (a Ray Data reader), untranslated: still one line
    raw = OSError("When reading information for key 'k' in bucket 'b': AWS Error NETWORK_CONNECTION during "
                  "HeadObject operation: curlCode: 7, Could not connect to server (Request ID: 1)")
    assert io_failure(RuntimeError("task failed"), ObjectPath("s3://b/out")) is None
    wrapped = RuntimeError("task failed")
    wrapped.__cause__ = raw
    assert io_failure(wrapped, ObjectPath("s3://b/out")) == (
        "I/O error on object storage (s3://b/out): AWS Error NETWORK_CONNECTION during HeadObject operation: "
        "curlCode: 7, Could not connect to server")


def test_inputs_on_s3_are_read_in_place(s3: dict[str, str], tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from fusionweave.pipelines.curate import metadata
    from fusionweave.pipelines.curate.config import CurateConfig
    from fusionweave.pipelines.select.inputs import plan_parts
    from fusionweave.pipelines.storage.shard_sink import write_shard

    rows = pa.table({"URL": [f"http://example.test/{i}.jpg" for i in range(25)], "TEXT": ["a cat"] * 25})
    pq.write_table(rows, tmp_path / "laion.parquet", row_group_size=10)
    store.put_bytes(ObjectPath(f"s3://{BUCKET}/laion/part-0.parquet"), (tmp_path / "laion.parquet").read_bytes())
    cfg = CurateConfig.model_validate({"metadata": {"input": [f"s3://{BUCKET}/laion"], "rows_per_shard": 10}})
    parts = metadata.plan(cfg)
    assert [(p["file"], p["start"], p["stop"]) for p in parts] == [
        (f"s3://{BUCKET}/laion/part-0.parquet", a, b) for a, b in ((0, 10), (10, 20), (20, 25))]
    assert metadata._read_range(parts[2]).column("URL").to_pylist() == rows.column("URL").to_pylist()[20:]
    for i in range(2):
        write_shard(ObjectPath(f"s3://{BUCKET}/shards/in-{i}.tar"), [{"__key__": f"k{i}", "txt": "x"}])
    assert [p["input"] for p in plan_parts([ObjectPath(f"s3://{BUCKET}/shards")])] == [
        f"s3://{BUCKET}/shards/in-0.tar", f"s3://{BUCKET}/shards/in-1.tar"]
