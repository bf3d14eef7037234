"""The tracking protocol's metrics, as the two reference toolkits define them.

pytracking (pytracking/analysis/extract_results.py; OTB/LaSOT/TrackingNet style):
- boxes are (x, y, w, h) in pixels with the +1 px convention: a box covers x .. x+w-1, its centre
  is x + (w-1)/2, IoU uses the inclusive corners;
- the first frame's prediction is set to the ground truth; a zero-size prediction (on a frame
  whose ground truth is not NaN) takes the previous frame's box; a longer prediction is cut, a
  shorter one is an error on LaSOT and padded with zero boxes elsewhere;
- a frame is valid when its ground-truth w and h are > 0 (and, with visibility, it is visible):
  an invalid frame has overlap -1, centre error +inf and normalised centre error -1 (counted as
  a hit, as in pytracking); on LaSOT an invisible frame has both centre errors +inf;
- every frame counts in the denominator (exclude_invalid_frames=False, the published setting);
- success: IoU strictly > tau for tau = 0:0.05:1 (21), AUC = the curve's mean; precision:
  centre error <= tau px, tau = 0..50, P@20; normalised precision: centres divided by the
  ground truth's (w, h), tau = 0..0.5 step 0.01, P_norm@0.2; each curve is averaged per
  sequence, then over sequences.

got10k-toolkit (got10k/experiments/got10k.py, got10k/utils/metrics.py):
- boxes clipped to the image (`bound` = (W, H)), IoU without the +1 convention, with eps in
  the union and clipped to [0, 1];
- the first frame is skipped; frames 2..n with cover > 0 count; the IoUs of every sequence are
  concatenated: AO = their mean, SR_t = share with IoU > t; fps = mean(1 / t) over frame times.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

OVERLAP_THRESHOLDS = np.linspace(0.0, 1.0, 21)
CENTER_THRESHOLDS = np.arange(0, 51, dtype=np.float64)
NORM_CENTER_THRESHOLDS = np.arange(0, 51, dtype=np.float64) / 100.0
GOT_THRESHOLDS = np.linspace(0.0, 1.0, 101)


class InvalidResults(ValueError):
    """Predictions the protocol refuses (NaN, negative sizes, too few frames on LaSOT)."""


def iou_plus_one(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """pytracking's calc_iou_overlap: inclusive corners (x + w - 1)."""
    tl = np.maximum(pred[:, :2], gt[:, :2])
    br = np.minimum(pred[:, :2] + pred[:, 2:] - 1.0, gt[:, :2] + gt[:, 2:] - 1.0)
    inter = np.clip(br - tl + 1.0, 0.0, None).prod(axis=1)
    union = pred[:, 2:].prod(axis=1) + gt[:, 2:].prod(axis=1) - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return inter / union


def center_error(pred: np.ndarray, gt: np.ndarray, normalized: bool = False) -> np.ndarray:
    """pytracking's calc_err_center: centres x + (w - 1) / 2, optionally divided by the gt's (w, h)."""
    pc = pred[:, :2] + 0.5 * (pred[:, 2:] - 1.0)
    gc = gt[:, :2] + 0.5 * (gt[:, 2:] - 1.0)
    if normalized:
        with np.errstate(invalid="ignore", divide="ignore"):
            pc, gc = pc / gt[:, 2:], gc / gt[:, 2:]
    with np.errstate(invalid="ignore"):  # inf - inf on a zero-size gt: that frame is invalid anyway
        return np.sqrt(((pc - gc) ** 2).sum(axis=1))


@dataclass
class SequenceErrors:
    overlap: np.ndarray
    center: np.ndarray
    center_norm: np.ndarray
    valid: np.ndarray


def sequence_errors(pred: np.ndarray, gt: np.ndarray, visible: np.ndarray | None = None,
                    lasot: bool = False) -> SequenceErrors:
    """pytracking's calc_seq_err_robust for one sequence."""
    pred = np.array(pred, dtype=np.float64).reshape(-1, 4)
    gt = np.asarray(gt, dtype=np.float64).reshape(-1, 4)
    if np.isnan(pred).any() or (pred[:, 2:] < 0).any():
        raise InvalidResults("predictions hold NaN or negative sizes")
    if np.isnan(gt).any():
        raise InvalidResults("NaN in the ground truth")
    if (pred[:, 2:] == 0).any():
        for i in range(1, len(pred)):
            if (pred[i, 2:] == 0).any():
                pred[i] = pred[i - 1]
    if len(pred) > len(gt):
        pred = pred[:len(gt)]
    elif len(pred) < len(gt):
        if lasot:
            raise InvalidResults(f"{len(pred)} predicted boxes for {len(gt)} frames")
        pred = np.concatenate([pred, np.zeros((len(gt) - len(pred), 4))])
    pred[0] = gt[0]
    valid = (gt[:, 2:] > 0).sum(axis=1) == 2
    vis = None if visible is None else np.asarray(visible, dtype=bool)
    if vis is not None:
        if len(vis) != len(gt):
            raise InvalidResults(f"{len(vis)} visibility flags for {len(gt)} frames")
        valid &= vis
    center = center_error(pred, gt)
    center_norm = center_error(pred, gt, normalized=True)
    overlap = iou_plus_one(pred, gt)
    center[~valid] = np.inf
    center_norm[~valid] = -1.0
    overlap[~valid] = -1.0
    if lasot and vis is not None:
        center_norm[~vis] = np.inf
        center[~vis] = np.inf
    if np.isnan(overlap).any():
        raise InvalidResults("NaN overlap (a zero-area box on a valid frame)")
    return SequenceErrors(overlap, center, center_norm, valid)


@dataclass
class Curves:
    """Per-sequence curves (rows: sequences) and the dataset's scores in percent."""

    success: np.ndarray
    precision: np.ndarray
    norm_precision: np.ndarray
    names: list[str] = field(default_factory=list)

    @property
    def auc(self) -> float:
        return float(self.success.mean(axis=0).mean() * 100)

    @property
    def precision_20(self) -> float:
        return float(self.precision.mean(axis=0)[20] * 100)

    @property
    def norm_precision_20(self) -> float:
        return float(self.norm_precision.mean(axis=0)[20] * 100)

    def per_sequence(self) -> dict[str, dict[str, float]]:
        return {n: {"auc": float(s.mean() * 100), "precision_20": float(p[20] * 100),
                    "norm_precision_20": float(q[20] * 100)}
                for n, s, p, q in zip(self.names, self.success, self.precision, self.norm_precision)}


def sequence_curves(err: SequenceErrors) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = len(err.overlap)  # every frame counts in the denominator
    success = (err.overlap[:, None] > OVERLAP_THRESHOLDS[None, :]).sum(axis=0) / n
    precision = (err.center[:, None] <= CENTER_THRESHOLDS[None, :]).sum(axis=0) / n
    norm = (err.center_norm[:, None] <= NORM_CENTER_THRESHOLDS[None, :]).sum(axis=0) / n
    return success, precision, norm


def pytracking_curves(names: Sequence[str], errors: Sequence[SequenceErrors]) -> Curves:
    if not errors:
        raise InvalidResults("no sequences to evaluate")
    rows = [sequence_curves(e) for e in errors]
    return Curves(np.stack([r[0] for r in rows]), np.stack([r[1] for r in rows]), np.stack([r[2] for r in rows]),
                  list(names))


def iou_got10k(pred: np.ndarray, gt: np.ndarray, bound: tuple[float, float] | None = None) -> np.ndarray:
    """got10k.utils.metrics.rect_iou: boxes clipped to the image, no +1, eps in the union."""
    a = np.array(pred, dtype=np.float64).reshape(-1, 4)
    b = np.array(gt, dtype=np.float64).reshape(-1, 4)
    if bound is not None:
        for r in (a, b):
            r[:, 0] = np.clip(r[:, 0], 0, bound[0])
            r[:, 1] = np.clip(r[:, 1], 0, bound[1])
            r[:, 2] = np.clip(r[:, 2], 0, bound[0] - r[:, 0])
            r[:, 3] = np.clip(r[:, 3], 0, bound[1] - r[:, 1])
    x1 = np.maximum(a[:, 0], b[:, 0])
    y1 = np.maximum(a[:, 1], b[:, 1])
    x2 = np.minimum(a[:, 0] + a[:, 2], b[:, 0] + b[:, 2])
    y2 = np.minimum(a[:, 1] + a[:, 3], b[:, 1] + b[:, 3])
    inter = np.maximum(x2 - x1, 0) * np.maximum(y2 - y1, 0)
    union = a[:, 2] * a[:, 3] + b[:, 2] * b[:, 3] - inter
    return np.clip(inter / (union + np.finfo(float).eps), 0.0, 1.0)


def got10k_sequence_ious(pred: np.ndarray, gt: np.ndarray, cover: np.ndarray,
                         bound: tuple[float, float] | None = None) -> np.ndarray:
    """The IoUs a sequence contributes: frames 2..n (the first is the given box) with cover > 0."""
    pred = np.asarray(pred, dtype=np.float64).reshape(-1, 4)
    gt = np.asarray(gt, dtype=np.float64).reshape(-1, 4)
    if pred.shape != gt.shape:
        raise InvalidResults(f"{len(pred)} predicted boxes for {len(gt)} frames")
    ious = iou_got10k(pred[1:], gt[1:], bound)
    return ious[np.asarray(cover)[1:] > 0]


def got10k_scores(ious: Sequence[np.ndarray], times: Sequence[np.ndarray] = ()) -> dict[str, float]:
    """AO, SR0.5, SR0.75 (fractions, as the toolkit reports) over every sequence's IoUs
    concatenated, and fps = mean(1/t) over the positive, non-NaN frame times (-1 without)."""
    allv = np.concatenate([np.asarray(i, dtype=np.float64) for i in ious]) if ious else np.zeros(0)
    if allv.size == 0:
        raise InvalidResults("no frame with the target visible to score")
    t = np.concatenate([np.asarray(x, dtype=np.float64) for x in times]) if times else np.zeros(0)
    t = t[~np.isnan(t)]
    t = t[t > 0]
    return {"ao": float(allv.mean()), "sr50": float((allv > 0.5).mean()), "sr75": float((allv > 0.75).mean()),
            "fps": float((1.0 / t).mean()) if t.size else -1.0}


def got10k_success_curve(ious: Sequence[np.ndarray]) -> np.ndarray:
    allv = np.concatenate([np.asarray(i, dtype=np.float64) for i in ious])
    return (allv[:, None] > GOT_THRESHOLDS[None, :]).mean(axis=0)
