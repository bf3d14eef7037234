"""Which shards a build reads from an upstream stage folder."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from fusionweave.pipelines.storage.build_folder import IncompleteStage
from fusionweave.pipelines.select.inputs import plan_parts


def test_stage_folder_input_skips_parts_that_kept_nothing(tmp_path: Path) -> None:
    """A stage whose part kept no sample has a manifest line with no shard (select does this)."""
    (tmp_path / "shard-000001.tar").write_bytes(b"x" * 10)
    lines = [{"part": "000000", "rows_in": 2, "rejected": 2, "shard": None, "count": 0},
             {"part": "000001", "rows_in": 3, "rejected": 0, "shard": "shard-000001.tar", "count": 3, "bytes": 10}]
    (tmp_path / "_manifest.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    with pytest.raises(IncompleteStage, match="did not finish"):  # no _stats.json: its build was interrupted
        plan_parts([tmp_path])
    (tmp_path / "_stats.json").write_text("{}")
    parts = plan_parts([tmp_path])
    assert [(p["input"], p["expected"]) for p in parts] == [(str(tmp_path / "shard-000001.tar"), 3)]
