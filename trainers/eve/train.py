"""`train_eve`: EVE's three stages in OUT/stage1..3, each from the previous stage's final folder.

A stage whose `final/` folder exists is done and skipped; an unfinished one is run again by `fit`,
which resumes from its own checkpoint, so rerunning the command continues where it stopped. A stage
with no data is skipped and the next starts from the last finished one. `eve_report.json` lists
each stage's outcome, final folder and rejected samples by reason.
"""
from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Any, Callable

from fusionweave.trainers.eve.method import FINAL, REJECTS, EveConfig, EveMethod, finished

REPORT = "eve_report.json"


def train_eve(cfg: EveConfig, out: Path, fit: Callable[..., Any] | None = None, progress: bool = True) -> dict:
    """Run the stages; `fit(method, out)` is the training core's loop (or its Ray Train launcher)."""
    if fit is None:
        from fusionweave.trainers.core.loop import fit as core_fit

        fit = partial(core_fit, progress=progress)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    init: Path | None = None
    report: dict[str, Any] = {}
    for n in (1, 2, 3):
        folder = out / f"stage{n}"
        if cfg.stage(n).data is None:
            report[f"stage{n}"] = {"status": "skipped (no data)"}
            continue
        status = "already finished"
        if not finished(folder):
            fit(EveMethod(cfg, n, init), folder)
            if not finished(folder):
                raise RuntimeError(f"stage {n} ended without its final model in {folder / FINAL}")
            status = "trained"
        init = folder / FINAL
        rejects = folder / REJECTS
        report[f"stage{n}"] = {"status": status, "final": str(init),
                               "rejects": json.loads(rejects.read_text()) if rejects.is_file() else {}}
    report["model"] = str(init) if init else None
    (out / REPORT).write_text(json.dumps(report, indent=1))
    return report


def run(name: str, cfg: EveConfig, out: Path, fit: Callable[..., Any]) -> dict:
    """The `fusionweave train eve` entry (trainers/registry.py)."""
    return train_eve(cfg, out, fit=fit)
