"""The mcl benchmark runs in CI at a tiny size: every modality is built on Ray and by the bare
loop with the same item counts, and a ratio is printed for each (the figures that count are in
benchmarks/README.md, measured at full size)."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT

pytestmark = pytest.mark.heavy


def test_bench_mcl_runs_and_reports_ratios(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "benchmarks/bench_mcl.py", "--videos", "4", "--clips", "4", "--clouds", "2",
                        "--per-shard", "2", "--work", str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = re.findall(r"^(video|audio|pointcloud)\s+(\d+) items: .* ours/bare ([\d.]+)x", r.stdout.replace("\r", "\n"),
                       re.M)
    assert {(m, int(n)) for m, n, _ in lines} == {("video", 4), ("audio", 4), ("pointcloud", 2)}
    assert all(float(x) > 0 for _, _, x in lines)
