"""Every benchmark in one command, side by side with its baseline, into one results file.

    python -m benchmarks [--size ci|full] [--only NAME ...] [--out benchmarks/results.json] [--readme]
    python -m benchmarks --readme-only            # regenerate benchmarks/README.md from results.json

Each benchmark runs in a process of its own (a crash, a Ray session or a model stays there) at
the chosen size preset, and reports `Result`s (benchmarks/common.py). The file gets, per
benchmark, its results (ours, the baseline, both in the same unit, the ratio and the goal) or the
error that ended it, plus the machine it ran on. The exit status is 1 when a benchmark crashed,
never for a missed goal: timings are read by people, not gated on (shared machines are noisy).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# run order: cheap and data-side first, the model and training benchmarks last
BENCHMARKS = ["metadata_filter", "metadata_engines", "validate", "download", "memory", "select", "embed", "embed_real",
              "loader", "mcl", "perceive", "perceive_real", "depth_real", "ovd_real", "tagger_real", "ocr_real", "paddleocr", "caption", "caption_real", "s3", "cluster", "transfer", "eve",
              "caption_engine", "dytrack", "pathweave"]
# the model stages again with random weights at real architectures' sizes (benchmarks/real_size_models.py):
# the script and its options; full size only (building them is most of a ci run's budget). Each expert gets
# enough images that a run is minutes, not seconds: the stage's fixed cost (a fresh actor process importing
# the framework and loading the weights, ~2 s) is then what it is at scale, noise; OCR is fast, so it gets more.
# Two rounds in turns: the bare loop alone moved by 20% from run to run here (71-85 s for depth).
VARIANTS: dict[str, tuple[str, list[str]]] = {
    "embed_real": ("embed", ["--models", "real"]),
    "perceive_real": ("perceive", ["--models", "real", "--only", "detector",
                                   "--images", "48", "--per-shard", "12", "--batch", "4", "--rounds", "2"]),
    # depth's stage pays a fixed ~8 s more per run than its bare loop (a fresh actor importing transformers,
    # and the Ray job): a tenth of a 48-image run (0.82x in one run, 0.92x in the next), so twice the images
    "depth_real": ("perceive", ["--models", "real", "--only", "depth", "--images", "96", "--per-shard", "12",
                                "--batch", "4", "--rounds", "2"]),
    # OVD's stage pays a fixed 7-8 s more per run than its bare loop (a fresh actor and the Ray job):
    # at 48 images that alone was 0.90x, so it gets twice the images
    "ovd_real": ("perceive", ["--models", "real", "--only", "ovd", "--images", "96", "--per-shard", "12",
                              "--batch", "4", "--rounds", "2"]),
    # the tagger's forward is fast (16 s for 48 images), so a fixed 6-8 s per run was a third of it
    "tagger_real": ("perceive", ["--models", "real", "--only", "tagger", "--images", "240", "--per-shard", "48",
                                 "--batch", "4", "--rounds", "2"]),
    "ocr_real": ("perceive", ["--models", "real", "--only", "ocr", "--images", "240", "--per-shard", "48", "--batch", "4",
                              "--rounds", "2"]),
    "caption_real": ("caption", ["--models", "real", "--images", "16", "--per-shard", "4", "--batch", "4",
                                 "--max-new-tokens", "16"]),
}


def machine() -> dict[str, Any]:
    import psutil

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                timeout=10).stdout.strip()
    except OSError:
        commit = ""
    try:
        from importlib.metadata import version

        torch = version("torch")
    except Exception:  # noqa: BLE001 - informational only
        torch = ""
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "python": platform.python_version(), "platform": platform.platform(), "torch": torch,
            "commit": commit, "load_average": [round(x, 2) for x in os.getloadavg()]}


def run_one(script: Path, size: str, timeout: float | None, extra: list[str] | None = None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix=f"fw-{script.stem}-") as tmp:
        out = Path(tmp) / "results.json"
        cmd = [sys.executable, str(script), "--size", size, "--json", str(out), *(extra or [])]
        t0 = time.perf_counter()
        try:
            p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"error": f"timed out after {timeout:.0f} s", "seconds": round(time.perf_counter() - t0, 1)}
        seconds = round(time.perf_counter() - t0, 1)
        if p.returncode != 0 or not out.exists():
            tail = (p.stderr or p.stdout)[-3000:]
            return {"error": f"exit {p.returncode}: {tail}", "seconds": seconds}
        results = json.loads(out.read_text())
        bad = [r["name"] for r in results if not (r["ours"] > 0 and r["baseline"] > 0 and math.isfinite(r["ratio"]))]
        if not results or bad:  # a figure that is not a measurement is a broken benchmark
            return {"error": f"no valid results: {bad or 'none reported'}", "results": results, "seconds": seconds}
        return {"results": results, "seconds": seconds}


def main(argv: list[str] | None = None) -> int:
    from benchmarks.common import table
    from benchmarks.readme import write_readme

    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=["ci", "full"], default="full")
    ap.add_argument("--only", nargs="+", choices=BENCHMARKS, default=None)
    ap.add_argument("--out", type=Path, default=None,
                    help="results file (default benchmarks/results.json at full size, results-ci.json at ci size)")
    ap.add_argument("--timeout", type=float, default=None, help="seconds per benchmark (default: 600 at ci size)")
    ap.add_argument("--readme", action="store_true", help="then regenerate benchmarks/README.md from the results")
    ap.add_argument("--readme-only", action="store_true", help="only regenerate README.md from --out")
    args = ap.parse_args(argv)
    out = args.out or HERE / ("results.json" if args.size == "full" else "results-ci.json")
    if args.readme_only:
        write_readme(json.loads(out.read_text()), HERE / "README.md")
        return 0
    timeout = args.timeout or (600 if args.size == "ci" else None)
    record: dict[str, Any] = {"size": args.size, "date": time.strftime("%Y-%m-%d %H:%M %Z"), "machine": machine(),
                              "benchmarks": {}}
    for name in args.only or BENCHMARKS:
        if name in VARIANTS and args.size == "ci" and not args.only:
            continue
        script, extra = VARIANTS.get(name, (name, []))
        print(f"== {name}", flush=True)
        record["benchmarks"][name] = res = run_one(HERE / f"bench_{script}.py", args.size, timeout, extra)
        print(f"   CRASHED: {res['error'][-500:]}" if "error" in res else table(res["results"]), flush=True)
        out.write_text(json.dumps(record, indent=1))  # as it goes: a long run keeps what it measured
    rows = [r for b in record["benchmarks"].values() if "error" not in b for r in b["results"]]
    print(f"\n{table(rows)}\n\nwritten: {out}")
    crashed = [n for n, b in record["benchmarks"].items() if "error" in b]
    if args.readme:
        write_readme(record, HERE / "README.md")
    if crashed:
        print(f"crashed: {', '.join(crashed)}", file=sys.stderr)
    return 1 if crashed else 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
