"""The run report: per stage and step, rows in/out and rejects by reason."""
from __future__ import annotations

import json
from typing import Any

from fusionweave.pipelines.storage import store
from fusionweave.pipelines.storage.build_folder import STATS
from fusionweave.pipelines.storage.location import Loc


def collect(out: Loc, order: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """Stats of every finished stage, in pipeline order when given."""
    found = {p.parent.name: p for p in store.glob(out, f"*/{STATS}")}
    names = [n for n in (order or []) if n in found] + sorted(n for n in found if n not in (order or []))
    return {n: json.loads(store.read_text(found[n])) for n in names}


def render(stages: dict[str, dict[str, Any]]) -> str:
    lines = []
    for name, st in stages.items():
        ok = "ok" if st["rows_in"] == st["rows_out"] + st["rejected"] else "UNBALANCED"
        lines.append(f"stage {name}: in {st['rows_in']:,} = out {st['rows_out']:,} + rejected {st['rejected']:,} "
                     f"[{ok}]  shards {st.get('shards', 0)}  {st.get('seconds', 0):.1f}s")
        for step, s in st.get("steps", {}).items():
            rej = ", ".join(f"{r} {n:,}" for r, n in s["rejects"].items()) or "-"
            lines.append(f"    {step:<22} in {s['rows_in']:>9,}  out {s['rows_out']:>9,}  {s['seconds']:>7.2f}s  rejects: {rej}")
        if "expert_errors" in st:
            # an expert that failed on a sample keeps the sample (its experts.json says why)
            errs = ", ".join(f"{k} {n:,}" for k, n in st["expert_errors"].items()) or "none"
            lines.append(f"    expert errors (samples kept, error in experts.json): {errs}")
        if "mcl" in st:
            lines += mcl_lines(st["mcl"])
    return "\n".join(lines)


def mcl_lines(m: dict[str, Any]) -> list[str]:
    """Samples per modality, split, task and source; rejects per modality; media statistics."""
    lines = ["    samples by modality / split / task / source:"]
    for modality, splits in m["counts"].items():
        for split, tasks in sorted(splits.items()):
            for task, sources in sorted(tasks.items()):
                lines.append(f"      {modality:<10} {split:<9} {task:<7} " +
                             ", ".join(f"{s} {n:,}" for s, n in sorted(sources.items())))
    for modality, rej in m["rejects"].items():
        if rej:
            lines.append(f"    rejects {modality:<10} " + ", ".join(f"{r} {n:,}" for r, n in rej.items()))
    for modality, metrics in m["media"].items():
        lines.append(f"    media   {modality:<10} " + "; ".join(
            f"{k} mean {v['mean']:g} (min {v['min']:g}, max {v['max']:g})" for k, v in metrics.items()))
    return lines


def write(out: Loc, order: list[str] | None = None) -> str:
    stages = collect(out, order)
    text = render(stages)
    store.put_bytes(out / "report.json", json.dumps(stages, indent=2).encode())
    store.put_bytes(out / "report.txt", (text + "\n").encode())
    return text
