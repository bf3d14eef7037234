"""Matching data converters (Karpathy JSON + images, SCAN precomp) and the synthetic dataset:
5 captions per image in order, split order kept, bad inputs as clear errors; read back through
the streaming loader."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fusionweave.trainers.matching.data import MatchingDataError, from_karpathy, from_precomp, synthetic
from fusionweave.trainers.stream import ResumableLoader, ShardStream


def read_split(folder: Path) -> list[dict]:
    loader = ResumableLoader(ShardStream([folder], 1, shuffle_buffer=0))
    return [{"key": b["__key__"][0], **b["json"][0], **{k: b[k][0] for k in b if k not in ("__key__", "json")}}
            for b in loader]


def test_karpathy_json_with_images(tmp_path: Path) -> None:
    imgs = tmp_path / "images" / "val2014"
    imgs.mkdir(parents=True)
    recs = []
    for i, split in enumerate(["train", "restval", "val", "test", "test", "train"]):
        name = f"COCO_{i:03d}.jpg"
        buf = io.BytesIO()
        Image.new("RGB", (10, 8), (i * 40, 0, 0)).save(buf, "JPEG")
        (imgs / name).write_bytes(buf.getvalue())
        recs.append({"filepath": "val2014", "filename": name, "cocoid": 100 + i, "split": split,
                     "sentences": [{"raw": f"caption {i}.{k} "} for k in range(6)]})
    ann = tmp_path / "dataset_coco.json"
    ann.write_text(json.dumps({"images": recs}))
    report = from_karpathy(ann, tmp_path / "images", tmp_path / "out", per_shard=2)
    assert {r["split"]: r["images"] for r in report} == {"train": 3, "dev": 1, "test": 2}
    train = read_split(tmp_path / "out" / "train")
    assert [r["image_id"] for r in train] == ["100", "101", "105"]  # restval joins train, order kept
    assert train[1]["captions"] == [f"caption 1.{k}" for k in range(5)]  # 5 kept, in order, stripped
    assert [r["order"] for r in read_split(tmp_path / "out" / "test")] == [0, 1]
    (imgs / "COCO_003.jpg").unlink()
    with pytest.raises(MatchingDataError, match="COCO_003.jpg is missing"):
        from_karpathy(ann, tmp_path / "images", tmp_path / "out2")


def test_scan_precomp(tmp_path: Path) -> None:
    feats = np.random.default_rng(0).random((3, 36, 2048)).astype(np.float32)
    np.save(tmp_path / "test_ims.npy", np.repeat(feats, 5, axis=0))  # SCAN repeats each image 5 times
    (tmp_path / "test_caps.txt").write_text("\n".join(f"c{i}" for i in range(15)) + "\n")
    assert from_precomp(tmp_path, "test", tmp_path / "out")["images"] == 3
    got = read_split(tmp_path / "out" / "test")
    assert [g["captions"][0] for g in got] == ["c0", "c5", "c10"]
    assert np.array_equal(got[2]["regions.npy"], feats[2])
    (tmp_path / "test_caps.txt").write_text("\n".join(f"c{i}" for i in range(14)))
    with pytest.raises(MatchingDataError, match="not a multiple of 5"):
        from_precomp(tmp_path, "test", tmp_path / "out2")


def test_synthetic_dataset_is_deterministic_and_describes_its_images(tmp_path: Path) -> None:
    a = synthetic(tmp_path / "a", {"train": 12, "test": 4}, seed=3, per_shard=5)
    synthetic(tmp_path / "b", {"train": 12, "test": 4}, seed=3, per_shard=5)
    assert [r["images"] for r in a] == [12, 4] and a[0]["shards"] == 3
    ta, tb = read_split(tmp_path / "a" / "train"), read_split(tmp_path / "b" / "train")
    assert [t["captions"] for t in ta] == [t["captions"] for t in tb]
    for t in ta:
        assert len(t["captions"]) == 5 and len(set(t["captions"])) == 5
        assert t["png"].shape == (3, 64, 64)
        colour = next(c for c in ("red", "green", "blue", "yellow", "purple", "orange") if c in t["captions"][0])
        assert all(colour in c for c in t["captions"])
