"""A shard that cannot be read is an error naming it, never a quiet short epoch."""
from __future__ import annotations

from pathlib import Path

import pytest

from fusionweave.pipelines.storage.shard_sink import write_shard
from fusionweave.trainers.shard_plan import ShardUnreadable, shard_counts
from fusionweave.trainers.stream import ShardStream


def test_unreadable_shards_are_refused_by_name(tmp_path: Path) -> None:
    good = tmp_path / "shard-000000.tar"
    write_shard(good, [{"__key__": f"k{i}", "txt": "x"} for i in range(3)])
    garbage = tmp_path / "other" / "shard-000001.tar"
    garbage.parent.mkdir()
    garbage.write_bytes(b"\x00not a tar at all" * 64)
    assert [s.count for s in shard_counts([good])] == [3]
    with pytest.raises(ShardUnreadable, match="shard-000001.tar: not a readable tar"):
        ShardStream([good, garbage], batch_size=2)
    with pytest.raises(ShardUnreadable, match="s3://bucket/shard-000002.tar: could not be read"):
        ShardStream([good, "s3://bucket/shard-000002.tar"], batch_size=2)
    with pytest.raises(ShardUnreadable, match="no samples could be read|could not be read"):
        shard_counts([f"pipe:cat {tmp_path / 'missing.tar'}"])
