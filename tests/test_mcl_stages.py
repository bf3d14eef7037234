"""MCL training helpers that need no build: the paired depth augmentation and the manifest checks."""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from fusionweave.trainers.mcl_stages import load_stages, paired_flip_crop


def test_paired_flip_crop_keeps_depth_aligned() -> None:
    h, w = 48, 64
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    rgb = torch.stack([ys, xs, ys * 0]).to(torch.int32)  # each pixel knows where it came from
    depth = ys * 1000 + xs
    for seed in range(20):
        r, d = paired_flip_crop(rgb, depth, random.Random(seed))
        assert r.shape[-2:] == d.shape and d.shape[0] >= int(0.8 * h) - 1
        assert torch.equal(r[0] * 1000 + r[1], d)  # the same crop and flip on both


def test_stage_manifest_format_is_checked(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="fusionweave build mcl"):
        load_stages(tmp_path)
    (tmp_path / "mcl_export").mkdir()
    (tmp_path / "mcl_export" / "stages.json").write_text(json.dumps({"format": "something-else/9", "stages": []}))
    with pytest.raises(ValueError, match="expected 'fusionweave.mcl-stages/1'"):
        load_stages(tmp_path)
