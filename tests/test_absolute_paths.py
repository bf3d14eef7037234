"""Every path of a config is made absolute on the driver before planning (workers resolve a
relative path against their own working directory, not the driver's) and recorded so."""
from __future__ import annotations

from pathlib import Path

import pytest

from fusionweave.orchestration.config import with_absolute_paths
from fusionweave.pipelines.perceive.config import PerceiveConfig


def test_paths_are_made_absolute_and_ids_are_not(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "shards").mkdir()
    (tmp_path / "tags.txt").write_text("cat\ndog\n")
    (tmp_path / "models" / "owl").mkdir(parents=True)
    cfg = PerceiveConfig.model_validate({
        "input": ["shards", "not-there-yet"],
        "tagger": {"enabled": True, "model": "openai/clip-vit-base-patch32", "vocabulary": "tags.txt"},
        "ovd": {"enabled": True, "model": "models/owl"},
        "ocr": {"enabled": False}})
    got = with_absolute_paths(cfg)
    assert got.input == [tmp_path / "shards", tmp_path / "not-there-yet"]  # Path fields: always
    assert got.tagger.vocabulary == str(tmp_path / "tags.txt")  # an existing relative file
    assert got.ovd.model == str(tmp_path / "models" / "owl")
    assert got.tagger.model == "openai/clip-vit-base-patch32"  # a Hugging Face id stays as written
    assert got.ocr == cfg.ocr and with_absolute_paths(got) == got
    assert got.model_dump(mode="json")["input"][0] == str(tmp_path / "shards")  # what build.json records
