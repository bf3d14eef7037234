"""The tracking metrics against numbers worked out by hand from the pytracking and got10k-toolkit
definitions (../shared/REFERENCE.md, DyTrack): a 3-frame LaSOT sequence with an invisible frame,
an IoU of exactly 0.5 (strict >), a first frame set to the ground truth."""
from __future__ import annotations

import numpy as np
import pytest

from fusionweave.trainers.dytrack import metrics as M

GT = np.array([[10, 10, 10, 10], [20, 20, 10, 10], [30, 30, 10, 10]], dtype=float)
PRED = np.array([[0, 0, 4, 4], [20, 20, 10, 5], [30, 30, 10, 10]], dtype=float)
VISIBLE = np.array([1, 1, 0])


def test_three_frames_lasot_rules_by_hand() -> None:
    err = M.sequence_errors(PRED, GT, VISIBLE, lasot=True)
    # frame 1 is the ground truth; frame 2: inter 10x5=50, union 100+50-50 -> 0.5; frame 3 invisible
    assert err.overlap.tolist() == [1.0, 0.5, -1.0]
    # centres x + (w-1)/2: (24.5, 22) vs (24.5, 24.5) -> 2.5 px; normalised by gt (10, 10) -> 0.25
    assert err.center.tolist() == [0.0, 2.5, np.inf]
    assert err.center_norm.tolist() == [0.0, 0.25, np.inf]  # LaSOT: invisible -> +inf, a miss
    curves = M.pytracking_curves(["a"], [err])
    success = curves.success[0]
    # strict >: IoU 1 passes tau = 0 .. 0.95 (not 1.0), IoU 0.5 passes 0 .. 0.45 (not 0.5)
    expected = np.array([2 / 3] * 10 + [1 / 3] * 10 + [0.0])
    assert np.array_equal(success, expected)
    assert curves.auc == pytest.approx(100 * 10 / 21, abs=1e-12)  # (10*2/3 + 10*1/3) / 21
    assert curves.precision[0][2] == 1 / 3 and curves.precision[0][3] == 2 / 3
    assert curves.precision_20 == pytest.approx(100 * 2 / 3, abs=1e-12)  # the invisible frame counts, as a miss
    assert curves.norm_precision[0][24] == 1 / 3 and curves.norm_precision[0][25] == 2 / 3
    assert curves.norm_precision_20 == pytest.approx(100 / 3, abs=1e-12)


def test_invalid_frames_outside_lasot_follow_pytracking() -> None:
    err = M.sequence_errors(PRED, GT, VISIBLE, lasot=False)
    assert err.overlap[2] == -1.0 and err.center[2] == np.inf
    assert err.center_norm[2] == -1.0  # pytracking's -1: a hit for every normalised threshold
    assert M.pytracking_curves(["a"], [err]).norm_precision_20 == pytest.approx(200 / 3, abs=1e-12)
    # without visibility the third frame is valid and a perfect prediction
    assert M.sequence_errors(PRED, GT).overlap.tolist() == [1.0, 0.5, 1.0]
    # a zero-size ground truth is invalid whatever the visibility
    gt = GT.copy()
    gt[1, 2] = 0
    assert M.sequence_errors(PRED, gt).overlap[1] == -1.0


def test_plus_one_convention_counts_pixels() -> None:
    """IoU of inclusive pixel boxes: x .. x+w-1 rasterised on a grid."""
    rng = np.random.default_rng(0)
    boxes = rng.integers(0, 20, size=(50, 2, 2))
    sizes = rng.integers(1, 15, size=(50, 2, 2))
    for (a, b), (sa, sb) in zip(boxes, sizes):
        pa, pb = np.r_[a, sa].astype(float), np.r_[b, sb].astype(float)
        grid_a, grid_b = np.zeros((40, 40), bool), np.zeros((40, 40), bool)
        grid_a[int(pa[1]):int(pa[1] + pa[3]), int(pa[0]):int(pa[0] + pa[2])] = True
        grid_b[int(pb[1]):int(pb[1] + pb[3]), int(pb[0]):int(pb[0] + pb[2])] = True
        want = (grid_a & grid_b).sum() / (grid_a | grid_b).sum()
        assert M.iou_plus_one(pa[None], pb[None])[0] == pytest.approx(want, abs=1e-12)
    # the centre of pixels 0..9 is 4.5
    assert M.center_error(np.array([[0.0, 0, 10, 10]]), np.array([[4.5, 4.5, 1, 1]]))[0] == 0.0


def test_predictions_repaired_or_refused() -> None:
    pred = PRED.copy()
    pred[2] = [5, 5, 0, 3]  # zero size -> the previous frame's box
    assert M.sequence_errors(pred, GT).overlap[2] == M.sequence_errors(PRED[[0, 1, 1]], GT).overlap[2]
    with pytest.raises(M.InvalidResults, match="NaN or negative"):
        M.sequence_errors(np.array([[0, 0, 1, 1], [0, 0, -1, 2], [0, 0, 1, 1.0]]), GT)
    with pytest.raises(M.InvalidResults, match="2 predicted boxes for 3"):
        M.sequence_errors(PRED[:2], GT, VISIBLE, lasot=True)
    # elsewhere a short result is padded with zero boxes, which take the previous box
    assert M.sequence_errors(PRED[:2], GT).overlap.tolist() == [1.0, 0.5, 0.0]
    assert len(M.sequence_errors(np.vstack([PRED, PRED]), GT).overlap) == 3  # a long one is cut
    with pytest.raises(M.InvalidResults, match="NaN in the ground truth"):
        M.sequence_errors(PRED, np.full((3, 4), np.nan))
    with pytest.raises(M.InvalidResults, match="no sequences"):
        M.pytracking_curves([], [])


def test_got10k_ao_sr_fps_by_hand() -> None:
    cover = np.array([8, 8, 0])  # the third frame's target fully covered: not scored
    ious = M.got10k_sequence_ious(PRED, GT, cover, bound=(100, 100))
    eps = np.finfo(float).eps
    assert ious.tolist() == [50 / (100 + eps)]  # the first frame never counts
    scores = M.got10k_scores([ious, np.array([1.0, 0.8])], [np.array([0.01, 0.02, np.nan, 0.0])])
    assert scores["ao"] == pytest.approx((50 / (100 + eps) + 1.0 + 0.8) / 3, abs=1e-15)  # frames pooled
    assert scores["sr50"] == pytest.approx(2 / 3) and scores["sr75"] == pytest.approx(2 / 3)
    assert scores["fps"] == pytest.approx(75.0)  # mean(1/0.01, 1/0.02): NaN and 0 dropped
    # boxes are clipped to the image (W=25): pred 5x5 over gt 5x10
    assert M.iou_got10k(PRED[1:2], GT[1:2], bound=(25, 100))[0] == pytest.approx(25 / 50, abs=1e-12)
    assert M.got10k_success_curve([np.array([0.5, 0.75])])[50] == 0.5  # strict >
    with pytest.raises(M.InvalidResults, match="no frame"):
        M.got10k_scores([np.zeros(0)])
