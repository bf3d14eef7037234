"""Peak memory of the curate metadata stage when its input grows 10x (goal: flat).

Runs `fusionweave build curate --stages metadata` as a subprocess on N and 10*N LAION rows and
samples the summed USS (memory unique to each process, so shared libraries and Ray's
shared-memory object store are not counted once per worker) of its whole process tree
(driver, Ray's daemons and workers) every 200 ms. The baseline is the same build on the smaller input, both with the URL dedup shuffled on Ray
(no in-driver grouping of small side tables).

    python benchmarks/bench_memory.py [--rows 200000]
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import Result, emit, laion_parquet, parse  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def peak_rss(cmd: list[str]) -> tuple[float, float]:
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    top = psutil.Process(proc.pid)
    peak = 0
    while proc.poll() is None:
        total = 0
        try:
            for p in [top, *top.children(recursive=True)]:
                try:
                    total += p.memory_full_info().uss
                except psutil.Error:
                    pass
        except psutil.Error:
            pass
        peak = max(peak, total)
        time.sleep(0.2)
    if proc.returncode != 0:
        raise SystemExit(f"build failed: {' '.join(cmd)}")
    return peak / 2**20, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=200_000)
    args = parse(ap, {"ci": {"rows": 2_000}})
    tmp = Path(tempfile.mkdtemp(prefix="fw-bench-mem-"))
    results = {}
    for n in (args.rows, args.rows * 10):
        parquet = laion_parquet(Path("/tmp/fusionweave-bench") / f"laion-{n}.parquet", n)
        cfg = tmp / f"c{n}.yaml"
        # both sizes take the same (shuffled) URL-dedup path and have at least as many parts as
        # concurrent tasks, so only the input size differs
        cfg.write_text(yaml.safe_dump({"ray": {"local_group_max_rows": 0, "local_group_max_bytes": 0},
                                       "curate": {"metadata": {"input": [str(parquet)], "rows_per_shard": 50_000}}}))
        results[n] = peak_rss([sys.executable, "-m", "fusionweave.orchestration.cli", "build", "curate", "--config", str(cfg),
                               "--out", str(tmp / f"out{n}"), "--stages", "metadata", "--no-progress",
                               "--num-cpus", "2"])
    (a, ta), (b, tb) = results[args.rows], results[args.rows * 10]
    emit([Result("memory, metadata stage", f"peak USS of the process tree (driver + Ray), {args.rows * 10:,} rows "
                 f"vs {args.rows:,}", b, a, "MiB", "<= 1.2", {"seconds": [round(ta, 1), round(tb, 1)]})], args)


if __name__ == "__main__":
    main()
