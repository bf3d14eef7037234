"""A build checks itself as `verify` does, without re-reading the data, and a failed check is a
non-zero exit with one line, never an `[ok]`."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from fusionweave.datasets_cards.verify import verify
from fusionweave.orchestration import cli, commands
from fusionweave.pipelines.runner import PartResult, commit_part
from fusionweave.pipelines.storage.build_folder import StageFolder
from fusionweave.pipelines.storage.shard_sink import shard_name


def _stage(out: Path, name: str, n: int) -> StageFolder:
    folder = StageFolder(out, name)
    folder.prepare()
    e = commit_part(folder, {"part": "000000"}, PartResult(n, ["read"], samples=[{"__key__": f"k{i}", "txt": "x"}
                                                                               for i in range(n)], name=shard_name(0)))
    folder.finish([e])
    return folder


def test_the_shallow_check_reads_no_data_but_catches_what_the_manifest_contradicts(tmp_path: Path) -> None:
    a, b = _stage(tmp_path, "a", 4), _stage(tmp_path, "b", 3)
    assert verify(tmp_path, ["a", "b"], deep=False) == ["b: rows in 3 != a rows out 4"]
    assert verify(tmp_path, ["a", "b"], only=["a"], deep=False) == []
    shard = b.dir / shard_name(0)
    data = shard.read_bytes()
    shard.write_bytes(data[:-512] + b"\x01" * 512)  # same size, other bytes: only the deep check hashes
    assert verify(tmp_path, ["b"], deep=False) == []
    assert any("sha256 differs" in p for p in verify(tmp_path, ["b"]))
    shard.unlink()
    assert verify(tmp_path, ["b"], deep=False) == ["b/shard-000000.tar: missing"]


def test_a_failed_self_check_is_exit_1_and_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture) -> None:
    def failing(*args: object, **kwargs: object) -> None:
        raise commands.BuildCheckFailed("the build's own check found 1 problem(s): b: rows in 3 != a rows out 4")

    monkeypatch.setattr(commands, "run_build", failing)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(json.dumps({"curate": {"metadata": {"input": [str(tmp_path)]}}}))
    assert cli.main(["build", "curate", "--config", str(recipe), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["fusionweave: the build's own check found 1 problem(s): b: rows in 3 != a rows out 4"]
