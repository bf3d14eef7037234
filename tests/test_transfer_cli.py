"""`fusionweave train unipt|sherl|...` and `eval --compare` refuse bad input with one line and
exit 2, before any training (in-process CLI calls: no subprocess start-up)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from fusionweave.orchestration.cli import main
from fusionweave.trainers.matching.transfer.compare import table


def write(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture()
def shards(tmp_path: Path) -> Path:
    for split in ("train", "test"):
        (tmp_path / "data" / split).mkdir(parents=True)
    return tmp_path / "data"


@pytest.mark.parametrize("cfg,needle", [
    ({"image": {"model": "m"}}, "text"),  # no text backbone
    ({"text": {"model": "missing-bert"}, "image": {"model": "m"}}, "config.json"),
    ({"text": {"model": "t"}, "image": {"model": "m", "timm": "resnet50"}}, "exactly one"),
    ({"text": {"model": "t"}, "image": {"model": "m", "image_size": 8}}, "image_size"),
    ({"text": {"model": "t"}, "image": {"model": "m"}, "side_dim": 0}, "side_dim"),
])
def test_bad_transfer_configs_exit_2_with_one_line(tmp_path: Path, shards: Path, capsys: pytest.CaptureFixture,
                                                   cfg: dict, needle: str) -> None:
    path = write(tmp_path / "c.yaml", {"train": str(shards / "train"), "test": str(shards / "test"), **cfg})
    assert main(["train", "unipt", "--config", str(path), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err


def test_missing_shards_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = write(tmp_path / "c.yaml", {"train": str(tmp_path / "nope"), "test": str(tmp_path / "nope"),
                                       "text": {"model": "t"}, "image": {"model": "m"}})
    assert main(["train", "sherl", "--config", str(path), "--out", str(tmp_path / "run")]) == 2
    assert "no shards" in capsys.readouterr().err


def test_compare_refuses_folders_that_are_not_runs(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["eval", "--compare", str(tmp_path)]) == 2
    assert "no metrics.jsonl" in capsys.readouterr().err
    (tmp_path / "metrics.jsonl").write_text("{not json\n")
    assert main(["eval", "--compare", str(tmp_path)]) == 2
    assert "not JSON lines" in capsys.readouterr().err


def test_compare_table_reads_the_runs(tmp_path: Path) -> None:
    rows = {"full-finetune": (50.0, 400.0, 12.0), "unipt": (48.0, 100.0, 4.0)}
    for method, (rsum, saved, params) in rows.items():
        run = tmp_path / method
        run.mkdir()
        (run / "run.json").write_text(json.dumps({"method": method}))
        lines = [{"epoch": e, "rsum": rsum - 5 * (2 - e), "saved_bytes": saved * 2 ** 20, "trainable_params": params,
                  "optimizer_state_bytes": params * 8, "sec_per_step": 0.5} for e in (1, 2)]
        (run / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    text, summary = table([tmp_path / "full-finetune", tmp_path / "unipt"])
    assert [s["rsum"] for s in summary] == [50.0, 48.0]
    unipt = next(ln for ln in text.splitlines() if "| unipt |" in ln)
    assert "| 48.0 | 100.0 | 0.25 |" in unipt


def test_second_synthetic_split_has_its_own_palette_and_layout(tmp_path: Path) -> None:
    import io

    import numpy as np
    from PIL import Image

    from fusionweave.trainers.matching import data
    from fusionweave.trainers.matching.train import read_split

    data.synthetic(tmp_path, {"b": 30}, seed=3, palette="muted", layout="thirds")
    images, captions = read_split(tmp_path / "b")
    assert images.shape == (30, 3, 64, 64) and len(captions) == 150
    places = {p for p in data.LAYOUTS["thirds"] if any(f" {p}" in c for c in captions)}
    assert len(places) >= 5 and any("middle" in p or "centre" in p for p in places)
    one = Image.open(io.BytesIO(data.draw([("red", "square", "middle centre")], 60, "muted", "thirds")))
    px = np.asarray(one)
    assert tuple(px[30, 30]) == data.PALETTES["muted"]["red"] and tuple(px[5, 5]) == (245, 245, 245)
    with pytest.raises(data.MatchingDataError, match="palette"):
        data.synthetic(tmp_path, {"c": 2}, palette="neon")
