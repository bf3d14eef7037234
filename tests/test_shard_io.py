import io
import pickle
import tarfile

import pytest
import webdataset as wds

from fusionweave.pipelines.storage.atomic import atomic_path
from fusionweave.pipelines.storage.shard_sink import write_shard
from fusionweave.pipelines.storage.shard_source import Broken, Sample, iter_shard, unsafe_member


def samples(n=5):
    return [{"__key__": f"k{i:03d}", "jpg": bytes([i]) * 100, "txt": f"caption {i}", "json": {"i": i, "a": [1, 2]}}
            for i in range(n)]


def test_shards_are_byte_identical_and_readable(tmp_path):
    a = write_shard(tmp_path / "a.tar", samples())
    b = write_shard(tmp_path / "b.tar", samples())
    assert a["sha256"] == b["sha256"] and a["count"] == 5
    assert (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()
    got = list(wds.WebDataset(str(tmp_path / "a.tar"), shardshuffle=False))
    assert [g["__key__"] for g in got] == [f"k{i:03d}" for i in range(5)]
    assert got[2]["txt"] == b"caption 2"


def test_failed_write_leaves_nothing(tmp_path):
    def bad():
        yield samples(1)[0]
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        write_shard(tmp_path / "s.tar", bad())
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_no_partial(tmp_path):
    with pytest.raises(ValueError):
        with atomic_path(tmp_path / "x.bin") as tmp:
            tmp.write_bytes(b"partial")
            raise ValueError
    assert list(tmp_path.iterdir()) == []


def raw_tar(path, members):
    with tarfile.open(path, "w") as tf:
        for name, data in members:
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))


def test_unsafe_members_refused(tmp_path):
    p = tmp_path / "evil.tar"
    raw_tar(p, [("a.jpg", b"1"), ("a.txt", b"t"), ("../x.jpg", b"2"), ("/etc/x.jpg", b"3"), ("b.jpg", b"4")])
    items = list(iter_shard(p))
    broken = [i for i in items if isinstance(i, Broken)]
    good = [i for i in items if isinstance(i, Sample)]
    assert sorted(b.key for b in broken) == ["../x.jpg", "/etc/x.jpg"]
    assert all(b.reason == "unsafe_member_name" for b in broken)
    assert [g.key for g in good] == ["a", "b"]
    assert not (tmp_path.parent / "x.jpg").exists()


def test_truncated_tar_reports_instead_of_crashing(tmp_path):
    p = tmp_path / "t.tar"
    write_shard(p, samples(20))
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    items = list(iter_shard(p))
    good = [i for i in items if isinstance(i, Sample)]
    broken = [i for i in items if isinstance(i, Broken)]
    assert 0 < len(good) < 20
    assert broken and broken[-1].reason == "broken_tar"


def test_members_are_never_unpickled(tmp_path):
    class Boom:
        def __reduce__(self):
            return (exec, ("raise SystemExit('unpickled!')",))

    p = tmp_path / "p.tar"
    raw_tar(p, [("a.pyd", pickle.dumps(Boom())), ("a.pickle", pickle.dumps(Boom())), ("a.txt", b"x")])
    (s,) = list(iter_shard(p))
    assert isinstance(s.members["pyd"], bytes) and isinstance(s.members["pickle"], bytes)


@pytest.mark.parametrize("name,bad", [("a.jpg", False), ("dir/a.jpg", False), ("../a", True), ("/abs", True),
                                      ("a/../../b", True), ("a\\b", True)])
def test_unsafe_member_rule(name, bad):
    assert unsafe_member(name) == bad
