"""The originals' folder layouts, read into one `Annotations` per sequence.

LaSOT: `<class>/<class>-<n>/img/%08d.jpg` (from 1), `groundtruth.txt` (x,y,w,h per line),
`full_occlusion.txt` and `out_of_view.txt` (comma-separated 0/1; visible = neither).
GOT-10k: `<split>/<seq>/%08d.jpg` (from 1), `groundtruth.txt` (test split: the first line only),
`absence.label`, `cover.label` (0-8), `cut_by_image.label` (one value a line), `meta_info.ini`;
visible = not absent.
TrackingNet: `<chunk>/anno/<seq>.txt` and `<chunk>/frames/<seq>/%d.jpg` (from 0); every frame
visible (the dataset has no visibility labels).

Listing (`discover`) runs on the driver and touches only folder names; reading the files
(`load`) runs in the part's worker, where a malformed file becomes the sequence's reject."""
from __future__ import annotations

import configparser
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

LAYOUTS = ("lasot", "got10k", "trackingnet")


class BadSequence(Exception):
    """A sequence the build refuses: `reason` is the reject reason, the message its detail."""

    def __init__(self, reason: str, detail: str, frames: int | None = None):
        super().__init__(detail)
        self.reason = reason
        self.frames = frames  # the frames the ground truth claims, when it was read


@dataclass
class Annotations:
    boxes: np.ndarray  # (n, 4) x, y, w, h; NaN rows past a first-frame-only ground truth
    frames: list[Path]  # the frame files the ground truth expects, in order
    visible: np.ndarray  # (n,) bool
    annotated: int  # ground-truth lines (n, or 1 for a test split's first-frame-only file)
    per_frame: dict[str, list[Any]] = field(default_factory=dict)  # full_occlusion, cover, ...
    meta: dict[str, str] = field(default_factory=dict)


def read_boxes(path: Path) -> np.ndarray:
    """x,y,w,h per line, comma (or tab/space) separated; 'nan' stays NaN for the checks."""
    if not path.is_file():
        raise BadSequence("missing_annotation", f"{path.name} not found")
    rows = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = [p for p in re.split(r"[,\t ]+", line.strip()) if p]
        try:
            vals = [float(p) for p in parts]
        except ValueError:
            raise BadSequence("unparsable_annotation", f"{path.name} line {i}: {line[:60]!r}") from None
        if len(vals) != 4:
            raise BadSequence("unparsable_annotation", f"{path.name} line {i}: {len(vals)} values, not 4")
        rows.append(vals)
    if not rows:
        raise BadSequence("unparsable_annotation", f"{path.name} is empty")
    return np.array(rows, dtype=np.float64)


def read_flags(path: Path, n: int, sep: str | None) -> list[int]:
    """Integer labels: LaSOT's comma-separated line, GOT-10k's one a line."""
    if not path.is_file():
        raise BadSequence("missing_annotation", f"{path.name} not found")
    text = path.read_text().strip()
    try:
        vals = [int(float(v)) for v in (text.split(sep) if sep else text.split())]
    except ValueError:
        raise BadSequence("unparsable_annotation", f"{path.name}: not integers") from None
    if len(vals) != n:
        raise BadSequence("length_mismatch", f"{path.name} has {len(vals)} labels for {n} ground-truth boxes", n)
    return vals


def numbered_frames(folder: Path, width: int) -> dict[int, Path]:
    """The frame files of a folder by number (`%08d.jpg` from 1, or `%d.jpg` from 0)."""
    if not folder.is_dir():
        return {}
    pat = re.compile(r"^(\d{%d})\.(jpe?g|png)$" % width if width else r"^(\d+)\.(jpe?g|png)$", re.I)
    return {int(m.group(1)): p for p in folder.iterdir() if (m := pat.match(p.name))}


def frame_list(found: dict[int, Path], n: int, start: int) -> list[Path]:
    """Frames start .. start+n-1: a gap is a missing frame, another count a length mismatch."""
    want = range(start, start + n)
    if set(found) == set(want):
        return [found[i] for i in want]
    nums = sorted(found)
    if nums and nums == list(range(start, start + len(nums))):
        raise BadSequence("length_mismatch", f"{n} ground-truth boxes for {len(nums)} frames", n)
    gap = next((i for i in want if i not in found), None)
    if gap is None:
        raise BadSequence("length_mismatch", f"{n} ground-truth boxes; extra frames numbered past {start + n - 1}", n)
    raise BadSequence("missing_frame", f"frame {gap} is missing ({len(found)} of {n} frames present)", n)


def first_frame_only(boxes: np.ndarray, found: dict[int, Path], start: int) -> tuple[np.ndarray, int]:
    """A test split's ground truth (one line for many frames): NaN boxes for the frames after."""
    n = len(found) if len(boxes) == 1 and len(found) > 1 else len(boxes)
    if n == len(boxes):
        return boxes, len(boxes)
    return np.vstack([boxes, np.full((n - 1, 4), np.nan)]), 1


def load_lasot(seq: Path) -> Annotations:
    boxes = read_boxes(seq / "groundtruth.txt")
    n = len(boxes)
    frames = frame_list(numbered_frames(seq / "img", 8), n, 1)
    occ = read_flags(seq / "full_occlusion.txt", n, ",")
    oov = read_flags(seq / "out_of_view.txt", n, ",")
    visible = ~(np.array(occ, bool) | np.array(oov, bool))
    return Annotations(boxes, frames, visible, n, {"full_occlusion": occ, "out_of_view": oov})


def load_got10k(seq: Path) -> Annotations:
    found = numbered_frames(seq, 8)
    boxes, annotated = first_frame_only(read_boxes(seq / "groundtruth.txt"), found, 1)
    n = len(boxes)
    frames = frame_list(found, n, 1)
    per: dict[str, list[Any]] = {}
    if annotated == n:  # train/val: the labels cover every frame
        per = {"absence": read_flags(seq / "absence.label", n, None), "cover": read_flags(seq / "cover.label", n, None)}
        if (seq / "cut_by_image.label").is_file():
            per["cut_by_image"] = read_flags(seq / "cut_by_image.label", n, None)
    visible = ~np.array(per["absence"], bool) if per else np.ones(n, bool)
    meta: dict[str, str] = {}
    if (seq / "meta_info.ini").is_file():
        cp = configparser.ConfigParser(interpolation=None)  # urls hold '%'
        text = (seq / "meta_info.ini").read_text()
        try:
            cp.read_string(text if text.lstrip().startswith("[") else "[METAINFO]\n" + text)
            meta = {k: v for sec in cp.sections() for k, v in cp[sec].items()}
        except configparser.Error as err:
            raise BadSequence("unparsable_annotation", f"meta_info.ini: {err}") from None
    return Annotations(boxes, frames, visible, annotated, per, meta)


def load_trackingnet(anno: Path, frames_dir: Path) -> Annotations:
    found = numbered_frames(frames_dir, 0)
    boxes, annotated = first_frame_only(read_boxes(anno), found, 0)
    frames = frame_list(found, len(boxes), 0)
    return Annotations(boxes, frames, np.ones(len(boxes), bool), annotated)


def discover(layout: str, root: Path, split: str | None) -> list[dict[str, Any]]:
    """Every sequence of a source as a part description (name, class, the paths to load)."""
    return DISCOVER[layout](root, split)


def _lasot(root: Path, split: str | None) -> list[dict[str, Any]]:
    wanted = None
    if split is not None:  # LaSOT's testing_set.txt / training_set.txt
        listing = root / f"{split}_set.txt"
        if not listing.is_file():
            raise FileNotFoundError(f"{listing} (the split's sequence list)")
        wanted = {s.strip() for s in listing.read_text().split() if s.strip()}
    out = []
    for cls in sorted(p for p in root.iterdir() if p.is_dir()):
        for seq in sorted(p for p in cls.iterdir() if p.is_dir() and p.name.startswith(cls.name + "-")):
            if wanted is None or seq.name in wanted:
                out.append({"sequence": seq.name, "class": cls.name, "dir": str(seq)})
    return out


def _got10k(root: Path, split: str | None) -> list[dict[str, Any]]:
    base = root / split if split else root
    listing = base / "list.txt"
    names = [s.strip() for s in listing.read_text().split() if s.strip()] if listing.is_file() \
        else sorted(p.name for p in base.iterdir() if p.is_dir())
    return [{"sequence": n, "class": None, "dir": str(base / n)} for n in names]


def _trackingnet(root: Path, split: str | None) -> list[dict[str, Any]]:
    chunks = [root / split] if split else sorted(p for p in root.iterdir() if p.is_dir() and (p / "anno").is_dir())
    out = []
    for chunk in chunks:
        for anno in sorted((chunk / "anno").glob("*.txt")):
            out.append({"sequence": anno.stem, "class": None, "anno": str(anno),
                        "dir": str(chunk / "frames" / anno.stem)})
    return out


DISCOVER: dict[str, Callable[[Path, str | None], list[dict[str, Any]]]] = {
    "lasot": _lasot, "got10k": _got10k, "trackingnet": _trackingnet}


def load(part: dict[str, Any]) -> Annotations:
    if part["layout"] == "lasot":
        return load_lasot(Path(part["dir"]))
    if part["layout"] == "got10k":
        return load_got10k(Path(part["dir"]))
    return load_trackingnet(Path(part["anno"]), Path(part["dir"]))
