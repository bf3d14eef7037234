"""The tracking build: every sequence of LaSOT / GOT-10k / TrackingNet layouts as its own
WebDataset shard, one sample per frame in order (the frame's original bytes and a JSON with its
box, visibility and occlusion labels).

A sequence is kept whole or refused whole (a tracker needs every frame of it): a missing frame,
a ground truth whose length is not the frame count, NaN or negative box sizes, a box that lies
entirely outside its frame, an unreadable frame or annotation file each reject all its frames
with that reason. One part per sequence, so a killed build resumes at the sequence it was on.
"""
from __future__ import annotations

import io
import re
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from fusionweave.pipelines.engine import Engine
from fusionweave.pipelines.errors import BuildSetupError
from fusionweave.pipelines.pipeline_spec import Pipeline
from fusionweave.pipelines.runner import PartResult, Stage, run_stage
from fusionweave.pipelines.storage.build_folder import PartEntry
from fusionweave.pipelines.storage.location import Loc
from fusionweave.pipelines.storage.shard_sink import make_rejects
from fusionweave.pipelines.tracking.config import TrackingConfig
from fusionweave.pipelines.tracking.layouts import Annotations, BadSequence, discover, load, numbered_frames
from fusionweave.transforms.image_validate import sniff_format

STAGE = "tracking"
STEPS = ("annotations", "frames", "boxes")


def part_name(source: str, sequence: str) -> str:
    return f"{source}-{re.sub(r'[^A-Za-z0-9_-]+', '_', sequence)}"


def frame_key(part: str, i: int) -> str:
    return f"{part}_{i:08d}"


def check(cfg: TrackingConfig, out: Loc) -> list[dict[str, Any]]:
    """Every sequence to build, found from folder names before any work."""
    parts: list[dict[str, Any]] = []
    for i, s in enumerate(cfg.sources):
        if not s.root.is_dir():
            raise BuildSetupError(f"tracking.sources[{i}] ({s.name}).root: not a folder: {s.root}")
        try:
            found = discover(s.layout, s.root, s.split)
        except (FileNotFoundError, NotADirectoryError) as err:
            raise BuildSetupError(f"tracking.sources[{i}] ({s.name}): {s.layout} layout: {err}") from None
        if s.sequences is not None:
            names = {f["sequence"] for f in found}
            unknown = sorted(set(s.sequences) - names)
            if unknown:
                raise BuildSetupError(f"tracking.sources[{i}] ({s.name}).sequences: not found: {unknown[:5]}")
            found = [f for f in found if f["sequence"] in set(s.sequences)]
        if not found:
            raise BuildSetupError(f"tracking.sources[{i}] ({s.name}): no {s.layout} sequence under {s.root}")
        parts += [{**f, "part": part_name(s.name, f["sequence"]), "source": s.name, "layout": s.layout,
                   "input": f["dir"]} for f in found]
    dup = [k for k, n in Counter(p["part"] for p in parts).items() if n > 1]
    if dup:
        raise BuildSetupError(f"tracking: sequences map to the same shard name: {dup[:5]}")
    return sorted(parts, key=lambda p: p["part"])


def box_problem(ann: Annotations, sizes: list[tuple[int, int]]) -> str | None:
    """Why the boxes are refused ('invalid_box: ...' / 'box_outside_image: ...'), or None."""
    b = ann.boxes[:ann.annotated]
    for i, (box, vis, (w, h)) in enumerate(zip(b, ann.visible, sizes)):
        if np.isnan(box).any():
            if vis:
                return f"invalid_box: frame {i + 1}: NaN in {box.tolist()}"
            continue
        if box[2] < 0 or box[3] < 0:
            return f"invalid_box: frame {i + 1}: negative size {box.tolist()}"
        if vis and box[2] > 0 and box[3] > 0 and (box[0] >= w or box[1] >= h or box[0] + box[2] <= 0
                                                  or box[1] + box[3] <= 0):
            return f"box_outside_image: frame {i + 1}: {box.tolist()} in a {w}x{h} frame"
    return None


def read_frames(paths: list[Path]) -> tuple[list[bytes], list[tuple[int, int]]]:
    data, sizes = [], []
    for i, p in enumerate(paths):
        raw = p.read_bytes()
        try:
            with Image.open(io.BytesIO(raw)) as im:
                sizes.append(im.size)
        except Exception as err:  # noqa: BLE001 - any decoder failure is this frame's reject
            raise BadSequence("unreadable_frame", f"frame {i + 1} ({p.name}): {type(err).__name__}") from None
        data.append(raw)
    return data, sizes


def frame_json(part: dict[str, Any], ann: Annotations, i: int, size: tuple[int, int]) -> dict[str, Any]:
    box = ann.boxes[i]
    return {"sequence": part["sequence"], "source": part["source"], "layout": part["layout"], "class": part["class"],
            "frame": i, "n_frames": len(ann.frames), "box": None if np.isnan(box).any() else box.tolist(),
            "visible": bool(ann.visible[i]), "width": size[0], "height": size[1],
            **{k: v[i] for k, v in ann.per_frame.items()}, **({"meta": ann.meta} if i == 0 and ann.meta else {})}


def refused(part: dict[str, Any], n: int, step: str, reason: str, detail: str, seconds: dict[str, float]) -> PartResult:
    rows = [{"key": frame_key(part["part"], i), "step": step, "reason": reason, "detail": f"{part['sequence']}: {detail}"}
            for i in range(n)]
    return PartResult(n, STEPS, make_rejects(rows, STAGE), seconds, rejects_name=part["part"],
                      extra={"sequence": part["sequence"], "source": part["source"], "status": reason})


def sequence_part(cfg: TrackingConfig, part: dict[str, Any]) -> PartResult:
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    try:
        ann = load(part)
    except BadSequence as err:
        # the frames it claims: the ground truth's lines when read, else the files present
        n = err.frames or max(1, len(numbered_frames(Path(part["dir"]) / ("img" if part["layout"] == "lasot" else ""),
                                       0 if part["layout"] == "trackingnet" else 8)))
        return refused(part, n, "annotations", err.reason, str(err), seconds)
    n = len(ann.frames)
    if n < cfg.min_frames:
        return refused(part, n, "annotations", "too_short", f"{n} frames (min_frames {cfg.min_frames})", seconds)
    seconds["annotations"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    try:
        data, sizes = read_frames(ann.frames)
    except BadSequence as err:
        return refused(part, n, "frames", err.reason, str(err), seconds)
    seconds["frames"] = time.perf_counter() - t0
    problem = box_problem(ann, sizes)
    if problem is not None:
        reason, detail = problem.split(": ", 1)
        return refused(part, n, "boxes", reason, detail, seconds)
    samples = [{"__key__": frame_key(part["part"], i), sniff_format(raw) or "jpg": raw,
                "json": frame_json(part, ann, i, sizes[i])} for i, raw in enumerate(data)]
    return PartResult(n, STEPS, make_rejects([], STAGE), seconds, samples=samples, name=f"{part['part']}.tar",
                      rejects_name=part["part"],
                      extra={"sequence": part["sequence"], "source": part["source"], "status": "kept",
                             "annotated": ann.annotated})


def summary(entries: dict[str, PartEntry]) -> dict[str, Any]:
    status = Counter(e.extra.get("status", "kept") for e in entries.values())
    return {"tracking": {"sequences": len(entries), "kept": status.pop("kept", 0),
                         "rejected_by_reason": dict(sorted(status.items())),
                         "frames": sum(e.count for e in entries.values())}}


def stage(cfg: TrackingConfig, parts: list[dict[str, Any]]) -> Stage:
    return Stage(STAGE, plan=lambda: parts, work=lambda p: sequence_part(cfg, p), cpus=cfg.read_cpus,
                 conclude=summary)


def run(cfg: TrackingConfig, out: Loc, engine: Engine, stages: list[str] | None = None,
        stage_engines: dict[str, Engine] | None = None, checked: list[dict[str, Any]] | None = None
        ) -> dict[str, dict[str, Any]]:
    if stages is not None and STAGE not in stages:
        return {}
    return {STAGE: run_stage(engine, out, stage(cfg, checked if checked is not None else check(cfg, out)))}


PIPELINE = Pipeline("tracking", (STAGE,), run, check, final=STAGE)
