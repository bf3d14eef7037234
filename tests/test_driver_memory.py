"""Workers write the model stages' shards: the driver holds counts, never rows, so its peak
memory does not grow with the number of parts (perceive on N and on 10N images)."""
from __future__ import annotations

import io
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import yaml
from PIL import Image

from fusionweave.pipelines.storage.shard_sink import write_shard
from tests.helpers import ROOT
from tests.test_experts import TAGS

pytestmark = pytest.mark.heavy
PER_SHARD = 4


def _images(folder: Path, shards: int) -> Path:
    """Noisy 384x384 JPEGs (~100 KB each): bytes a driver that carried rows would feel."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for s in range(shards):
        samples = []
        for i in range(PER_SHARD):
            buf = io.BytesIO()
            Image.fromarray(rng.integers(0, 255, (384, 384, 3), np.uint8)).save(buf, "JPEG", quality=95)
            samples.append({"__key__": f"s{s:04d}-{i}", "jpg": buf.getvalue(), "json": {"url": f"http://x.test/{s}/{i}"}})
        write_shard(folder / f"in-{s:04d}.tar", samples)
    return folder


def _peak_driver_rss(args: list[str]) -> tuple[int, int]:
    """(return code, peak RSS in bytes) of the CLI process itself (not its Ray workers)."""
    proc = subprocess.Popen([sys.executable, "-m", "fusionweave.orchestration.cli", *args], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    me, peak = psutil.Process(proc.pid), 0
    while proc.poll() is None:
        try:
            peak = max(peak, me.memory_info().rss)
        except psutil.NoSuchProcess:
            break
        time.sleep(0.02)
    err = proc.stderr.read() if proc.stderr else ""
    assert proc.returncode == 0, err[-3000:]
    return proc.returncode, peak


def test_driver_memory_is_flat_in_the_number_of_parts(tmp_path: Path) -> None:
    from fusionweave.experts.tiny_models import make_tiny_clip_pair

    clip = make_tiny_clip_pair(tmp_path / "clip", TAGS)
    vocab = tmp_path / "tags.txt"
    vocab.write_text("\n".join(TAGS))
    off = {"enabled": False}
    peaks = {}
    for shards in (3, 30):
        cfg = tmp_path / f"p{shards}.yaml"
        cfg.write_text(yaml.safe_dump({"seed": 0, "perceive": {
            "input": [str(_images(tmp_path / f"in{shards}", shards))], "chunk_size": PER_SHARD,
            "tagger": {"model": str(clip), "vocabulary": str(vocab), "top_k": 3, "batch_size": PER_SHARD},
            "detector": off, "ovd": off, "ocr": off, "depth": off}}))
        out = tmp_path / f"out{shards}"
        _, peaks[shards] = _peak_driver_rss(["build", "perceive", "--config", str(cfg), "--out", str(out),
                                             "--no-progress", "--num-cpus", "2"])
        stats = json.loads((out / "perceive" / "_stats.json").read_text())
        assert stats["rows_out"] == shards * PER_SHARD and stats["shards"] == shards
    # 10x the parts and the image bytes (12 MB): the driver's peak stays within 1.2x
    shown = {k: f"{v / 2**20:.0f} MiB" for k, v in peaks.items()}
    print(f"driver peak RSS by input shards: {shown}")
    assert peaks[30] <= 1.2 * peaks[3], shown
