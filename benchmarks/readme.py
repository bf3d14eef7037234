"""benchmarks/README.md, generated: how to run, the last recorded results as a table, then the
hand-written notes (NOTES.md: how each figure was made, where the time goes, the history)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

HEADER = """# Benchmarks

Every benchmark runs fusionweave and a baseline side by side (same data, same process or run)
and reports the ratio. One command runs them all and records `results.json`; this file is
generated from it (`python -m benchmarks --readme-only`) plus the notes in `NOTES.md`:

```bash
python -m benchmarks                 # full size, with the real-size model runs (about 70-85 minutes on 2 cores): benchmarks/results.json
python -m benchmarks --size ci       # every benchmark at a tiny size: checks they run (CI does this)
python -m benchmarks --only perceive caption --readme
python benchmarks/bench_perceive.py --images 480   # one benchmark, its own options
```

Read the ratios, not the absolute numbers: these machines are shared and noisy. A ratio is
ours / baseline in the unit shown (above 1 is faster for throughputs; for MiB, lower is better).
"""


def cell(v: float) -> str:
    return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.3g}"


def results_table(record: dict[str, Any]) -> str:
    m = record["machine"]
    lines = [f"## Last run: `--size {record['size']}`, {record['date']}, commit {m.get('commit') or '?'}", "",
             f"{m['cpu']} ({m['cores']} cores, {m['memory_gib']} GiB), Python {m['python']}, torch {m['torch']}, "
             f"load average at start {m['load_average']}." + (f" {record['note']}." if record.get("note") else ""), "",
             "| benchmark | compares | ours | baseline | unit | ratio | goal |", "|---|---|---|---|---|---|---|"]
    for name, b in record["benchmarks"].items():
        if "error" in b:
            lines.append(f"| {name} | **crashed**: {b['error'].splitlines()[0][:120]} | | | | | |")
            continue
        for r in b["results"]:
            goal = "recorded" if not r["goal"] else f"{r['goal']}x " + ("met" if r["met"] else "**missed**")
            lines.append(f"| {r['name']} | {r['compares']} | {cell(r['ours'])} | {cell(r['baseline'])} | {r['unit']} "
                         f"| **{r['ratio']:.2f}x** | {goal} |")
    return "\n".join(lines)


def write_readme(record: dict[str, Any], path: Path) -> None:
    notes = (path.parent / "NOTES.md").read_text()
    notes = notes.split("\n", 1)[1] if notes.startswith("# ") else notes  # its own title goes
    path.write_text(f"{HEADER}\n{results_table(record)}\n\n## Notes and earlier runs\n{notes}")
