"""Shared helpers for the build tests."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pyarrow.parquet as pq
import yaml

ROOT = Path(__file__).resolve().parents[1]


def write_recipe(path: Path, parquet: Path | list[Path], **curate_overrides: dict) -> Path:
    curate = {
        "metadata": {"input": [str(p) for p in (parquet if isinstance(parquet, list) else [parquet])],
                     "rows_per_shard": 100},
        "url_policy": {"allow_private_networks": ["127.0.0.1"]},
        # the sample server's drip route holds a download until the deadline: keep it short
        # the download kept as a stage of its own (the tests of the fused default say so)
        "download": {"timeout": 5, "retries": 0, "thread_count": 16, "deadline": 5, "keep_shards": True},
    }
    for section, values in curate_overrides.items():
        curate.setdefault(section, {}).update(values)
    path.write_text(yaml.safe_dump({"seed": 0, "curate": curate}))
    return path


def cli(*args: str, timeout: float = 600, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fusionweave.orchestration.cli", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})


def kill_build_when(args: list[str], condition: Callable[[], bool], timeout: float = 300) -> None:
    """Start a build in its own process group and SIGKILL all of it (driver, Ray, workers)
    as soon as `condition` holds."""
    proc = subprocess.Popen([sys.executable, "-m", "fusionweave.orchestration.cli", *args], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + timeout
    try:
        while time.time() < deadline:
            if condition():
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                return
            if proc.poll() is not None:
                raise AssertionError("the build finished before the kill point was reached")
            time.sleep(0.05)
        raise AssertionError("kill point never reached")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def manifest_lines(path: Path) -> int:
    """Parts a stage has committed: its manifest's lines, or its part records while it runs."""
    records = path.parent / "_parts"
    return (len(path.read_text().splitlines()) if path.exists() else 0) + \
        (len(list(records.rglob("*.json"))) if records.is_dir() else 0)  # part names may hold '/'


def stage_shards(out: Path, stage: str) -> dict[str, str]:
    """shard name -> sha256, from the manifest, checked against the bytes on disk."""
    import hashlib

    res = {}
    for line in (out / stage / "_manifest.jsonl").read_text().splitlines():
        e = json.loads(line)
        if e.get("shard"):
            data = (out / stage / e["shard"]).read_bytes()
            assert hashlib.sha256(data).hexdigest() == e["sha256"], f"{stage}/{e['shard']} does not match its manifest"
            res[e["shard"]] = e["sha256"]
    return res


def all_rejects(out: Path, stage: str):
    files = sorted((out / stage / "_rejects").glob("*.parquet"))
    import pyarrow as pa

    return pa.concat_tables([pq.read_table(f) for f in files]) if files else None


def visible_files(out: Path) -> list[Path]:
    return [p for p in out.rglob("*") if p.is_file()]


def curate_and_verify(recipe: Path, out: Path, env: dict[str, str] | None = None) -> dict[str, dict]:
    """`fusionweave build curate`, then every stage balanced (rows in = out + rejected, by
    `_stats.json` and by its rejects files) and `fusionweave verify OUT` clean. Returns each
    stage's `_stats.json`."""
    r = cli("build", "curate", "--config", str(recipe), "--out", str(out), "--no-progress", env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    stats = {}
    for stage in ("metadata", "download", "validate"):
        st = json.loads((out / stage / "_stats.json").read_text())
        assert st["rows_in"] == st["rows_out"] + st["rejected"], stage
        rej = all_rejects(out, stage)
        assert (rej.num_rows if rej is not None else 0) == st["rejected"], stage
        stats[stage] = st
    v = cli("verify", str(out))
    assert v.returncode == 0, v.stdout + v.stderr
    return stats
