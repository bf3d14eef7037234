"""Helpers shared by the benchmarks: synthetic LAION parquet, timing, and the one result shape
every benchmark reports (`Result`, printed and written by `emit`)."""
from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def laion_parquet(path: Path, rows: int, seed: int = 0, dup_rate: float = 0.02) -> Path:
    """LAION-shaped rows: URLs (some duplicated), captions, sizes, scores."""
    if path.exists() and pq.ParquetFile(path).metadata.num_rows == rows:
        return path
    rng = np.random.default_rng(seed)
    ids = np.arange(rows)
    dups = rng.random(rows) < dup_rate
    ids[dups] = rng.integers(0, rows, dups.sum())
    hosts = np.array([f"img{i}.example.com" for i in range(1000)])
    urls = pa.array([f"https://{hosts[i % 1000]}/p/{i}.jpg" for i in ids])
    words = np.array(["a", "photo", "of", "the", "red", "cat", "on", "sofa", "city", "night", "sale", "logo"])
    lens = rng.integers(0, 30, rows)
    caps = pa.array([" ".join(words[rng.integers(0, len(words), n)]) for n in lens])
    t = pa.table({
        "URL": urls, "TEXT": caps,
        "WIDTH": pa.array(rng.integers(100, 2000, rows).astype(float)),
        "HEIGHT": pa.array(rng.integers(100, 2000, rows).astype(float)),
        "similarity": pa.array(rng.random(rows) * 0.5), "punsafe": pa.array(rng.random(rows)),
        "pwatermark": pa.array(rng.random(rows)),
    })
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(t, path, row_group_size=100_000)
    return path


def best_of(fn: Callable[[], object], repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def best_of_alternating(fns: list[Callable[[], object]], repeat: int = 7) -> list[float]:
    """The best time of each function, run in turns: on a shared machine a load spike then
    hits every side alike, not only the one that happened to run during it."""
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeat):
        for fn, ts in zip(fns, times):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
    return [min(ts) for ts in times]


def model_stage_goal(models: str) -> str | None:
    """The goal of a model stage's benchmark: >= 0.9x at a real architecture's size. A tiny random
    model's forward takes a millisecond or two, so its run measures the stage's fixed costs: recorded,
    not judged (issue 23: the goal is for random weights at the real size)."""
    return ">= 0.9" if models == "real" else None


@dataclass
class Result:
    """One side-by-side comparison: fusionweave's figure and its baseline's, same data, same run.
    `ratio` is ours / baseline in `unit`: a throughput ratio above 1 is faster than the
    baseline; for seconds or bytes a ratio below 1 is better, and `goal` says which way."""

    name: str  # "perceive/tagger"
    compares: str  # what against what, one line
    ours: float
    baseline: float
    unit: str  # "images/s", "rows/s", "MiB", "s/step", ...
    goal: str | None = None  # on the ratio: ">= 0.9", "<= 1.2", or None (recorded)
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        return self.ours / self.baseline if self.baseline else float("nan")

    @property
    def met(self) -> bool | None:
        if not self.goal:
            return None
        op, value = self.goal.split()
        return self.ratio >= float(value) if op == ">=" else self.ratio <= float(value)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "ratio": round(self.ratio, 3), "met": self.met}


def parse(ap: argparse.ArgumentParser, sizes: dict[str, dict[str, Any]] | None = None) -> argparse.Namespace:
    """The benchmark's own options plus `--size ci|full` (presets of those options; an option
    given on the command line wins) and `--json PATH` (where `python -m benchmarks` reads the
    results)."""
    sizes = {"full": {}, **(sizes or {})}
    ap.add_argument("--size", choices=sorted(sizes), default="full", help="a preset of the options above")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here as JSON")
    known, _ = ap.parse_known_args()
    ap.set_defaults(**sizes[known.size])
    return ap.parse_args()


def emit(results: list[Result], args: argparse.Namespace) -> None:
    """Print the results as a table and, with `--json`, write them for the benchmark runner."""
    print(table(r.to_json() for r in results))
    if args.json is not None:
        args.json.write_text(json.dumps([r.to_json() for r in results], indent=1))


def table(rows: Iterable[dict[str, Any]]) -> str:
    lines = [f"{'benchmark':<34} {'ours':>12} {'baseline':>12} {'unit':<14} {'ratio':>7}  goal"]
    for r in rows:
        mark = {True: "met", False: "MISSED", None: ""}[r["met"]]
        goal = f"{r['goal']} {mark}" if r["goal"] else "recorded"
        lines.append(f"{r['name']:<34} {num(r['ours']):>12} {num(r['baseline']):>12} {r['unit']:<14} "
                     f"{r['ratio']:>6.2f}x  {goal}")
    return "\n".join(lines)


def num(v: float) -> str:
    return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.3g}"
