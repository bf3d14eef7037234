"""`fusionweave eval --compare RUN...`: the runs' accuracy and memory side by side, read from
each run folder's `metrics.jsonl` (and `run.json` for the method's name): the best rSum, the peak
bytes saved for backward (and its ratio to a full fine-tuning run among them), trainable
parameters, optimiser state, CUDA peak (GPU runs) and seconds per optimiser step."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fusionweave.pipelines.errors import BuildSetupError

MIB = 2 ** 20


def summarize(run: Path) -> dict[str, Any]:
    path = run / "metrics.jsonl"
    if not path.is_file():
        raise BuildSetupError(f"--compare {run}: no metrics.jsonl (not a training run folder, or no epoch finished)")
    try:
        rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    except json.JSONDecodeError as err:
        raise BuildSetupError(f"--compare {path}: not JSON lines ({err})") from None
    rows = [r for r in rows if isinstance(r, dict) and "rsum" in r]
    if not rows:
        raise BuildSetupError(f"--compare {path}: no epoch with an rSum")
    meta = run / "run.json"
    method = json.loads(meta.read_text()).get("method", run.name) if meta.is_file() else run.name

    def peak(key: str) -> float | None:
        vals = [r[key] for r in rows if key in r]
        return max(vals) if vals else None

    steps = [r["sec_per_step"] for r in rows if "sec_per_step" in r]
    return {"run": str(run), "method": method, "rsum": max(r["rsum"] for r in rows), "epochs": len(rows),
            "saved_bytes": peak("saved_bytes"), "trainable_params": peak("trainable_params"),
            "optimizer_state_bytes": peak("optimizer_state_bytes"), "cuda_max_allocated": peak("cuda_max_allocated"),
            "sec_per_step": sum(steps) / len(steps) if steps else None}


def _mib(v: float | None) -> str:
    return "-" if v is None else f"{v / MIB:.1f}"


def table(runs: list[Path]) -> tuple[str, list[dict[str, Any]]]:
    rows = [summarize(Path(r)) for r in runs]
    full = next((r["saved_bytes"] for r in rows if r["method"] == "full-finetune" and r["saved_bytes"]), None)
    lines = ["| run | method | rSum | saved for backward MiB | x full FT | trainable params | optimizer state MiB "
             "| CUDA max MiB | s/step |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ratio = f"{r['saved_bytes'] / full:.2f}" if full and r["saved_bytes"] is not None else "-"
        params = "-" if r["trainable_params"] is None else f"{int(r['trainable_params']):,}"
        sps = "-" if r["sec_per_step"] is None else f"{r['sec_per_step']:.3f}"
        lines.append(f"| {r['run']} | {r['method']} | {r['rsum']:.1f} | {_mib(r['saved_bytes'])} | {ratio} | {params} "
                     f"| {_mib(r['optimizer_state_bytes'])} | {_mib(r['cuda_max_allocated'])} | {sps} |")
    return "\n".join(lines), rows
