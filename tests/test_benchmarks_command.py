"""`python -m benchmarks`: one results shape, crashes and invalid figures recorded (and failing the
command), missed goals only reported; README.md generated from the results. Every benchmark
itself runs at the ci size in CI, after the tests (the README's test command)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.__main__ import BENCHMARKS, VARIANTS, run_one
from benchmarks.common import Result
from benchmarks.readme import write_readme

ROOT = Path(__file__).resolve().parents[1]


def test_every_benchmark_script_is_run_and_has_a_ci_size() -> None:
    scripts = sorted(p.stem.removeprefix("bench_") for p in (ROOT / "benchmarks").glob("bench_*.py"))
    assert sorted(n for n in BENCHMARKS if n not in VARIANTS) == scripts
    assert {script for script, _ in VARIANTS.values()} <= set(scripts)
    for name in scripts:
        text = (ROOT / "benchmarks" / f"bench_{name}.py").read_text()
        assert "emit(" in text and "parse(ap, " in text, name  # reports Results, takes --size


def test_ratio_and_goal_both_ways() -> None:
    fast = Result("x", "x vs y", 90.0, 100.0, "images/s", ">= 0.9")
    assert fast.ratio == pytest.approx(0.9) and fast.met is True
    assert Result("x", "", 80.0, 100.0, "images/s", ">= 0.9").met is False
    mem = Result("m", "10x input vs 1x", 1300.0, 1000.0, "MiB", "<= 1.2")
    assert mem.met is False and Result("m", "", 1100.0, 1000.0, "MiB", "<= 1.2").met is True
    assert Result("r", "", 1.0, 2.0, "s").met is None
    row = fast.to_json()
    assert row["ratio"] == 0.9 and row["met"] is True and json.loads(json.dumps(row)) == row


BENCH = """import argparse, sys
sys.path.insert(0, {root!r})
from benchmarks.common import Result, emit, parse
args = parse(argparse.ArgumentParser(), {{"ci": {{}}}})
{body}
"""


@pytest.mark.parametrize("body,error", [
    ("raise RuntimeError('model missing')", "RuntimeError: model missing"),
    ("emit([Result('x', 'x vs y', 0.0, 10.0, 'images/s')], args)", "no valid results: ['x']"),
    ("emit([], args)", "no valid results: none reported"),
    ("import time; time.sleep(30)", "timed out after 2 s"),
])
def test_a_broken_benchmark_is_recorded_not_raised(tmp_path: Path, body: str, error: str) -> None:
    script = tmp_path / "bench_broken.py"
    script.write_text(BENCH.format(root=str(ROOT), body=body))
    res = run_one(script, "ci", timeout=2)
    assert error in res["error"], res


def test_a_working_benchmark_reports_its_results(tmp_path: Path) -> None:
    script = tmp_path / "bench_ok.py"
    script.write_text(BENCH.format(root=str(ROOT), body="emit([Result('x', 'x vs y', 9.0, 10.0, 'images/s', '>= 0.8')], args)"))
    res = run_one(script, "ci", timeout=60)
    assert [(r["name"], r["ratio"], r["met"]) for r in res["results"]] == [("x", 0.9, True)] and "error" not in res


def test_readme_is_generated_from_results_and_notes(tmp_path: Path) -> None:
    (tmp_path / "NOTES.md").write_text("# Benchmark notes\n\nHow the loader figure was made.\n")
    record = {"size": "ci", "date": "2026-12-06", "machine": {"cpu": "cpu", "cores": 2, "memory_gib": 24,
                                                                "python": "3.11", "torch": "2.14.1", "commit": "abc",
                                                                "load_average": [0.5]},
              "benchmarks": {"loader": {"results": [Result("loader", "ours vs bare", 95.0, 100.0, "samples/s",
                                                           ">= 0.9").to_json()], "seconds": 3.0},
                             "s3": {"error": "exit 1: boom\nmore", "seconds": 1.0}}}
    write_readme(record, tmp_path / "README.md")
    text = (tmp_path / "README.md").read_text()
    assert "| loader | ours vs bare | 95 | 100 | samples/s | **0.95x** | >= 0.9x met |" in text
    assert "| s3 | **crashed**: exit 1: boom |" in text
    assert "How the loader figure was made." in text and "# Benchmark notes" not in text
