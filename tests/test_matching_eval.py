"""R@K and rSum on hand-computed similarity matrices: the 5-caption rule, the 5-fold split,
ensembles."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fusionweave.trainers.matching.evaluate import coco_1k, ensemble, i2t_ranks, recall, save_sims, t2i_ranks


def test_perfect_and_hand_computed_ranks() -> None:
    perfect = np.kron(np.eye(3), np.ones((1, 5)))  # image i scores its own 5 captions 1
    r = recall(perfect)
    assert r["i2t_r1"] == r["t2i_r1"] == 100.0 and r["rsum"] == 600.0
    sims = np.zeros((2, 10))
    sims[0] = [0.1, 0.2, 0.9, 0.0, 0.0, 0.95, 0.3, 0.3, 0.3, 0.3]  # best own caption (0.9) ranks 2nd
    sims[1] = [0.5, 0.5, 0.5, 0.5, 0.5, 0.1, 0.2, 0.3, 0.4, 0.45]  # own captions rank 6th..10th: best rank 5
    assert i2t_ranks(sims).tolist() == [1, 5]  # the best of the 5 captions counts
    # caption -> image: caption 5 (image 1) scores 0.95 on image 0, 0.1 on image 1: rank 1;
    # a tie (caption 7: 0.3 and 0.3) goes to the lower image index
    assert t2i_ranks(sims).tolist() == [1, 1, 0, 1, 1, 1, 1, 1, 0, 0]
    r = recall(sims)
    assert r["i2t_r1"] == 0.0 and r["i2t_r5"] == 50.0 and r["i2t_r10"] == 100.0
    assert r["t2i_r1"] == 30.0 and r["t2i_r5"] == 100.0
    assert r["rsum"] == pytest.approx(0 + 50 + 100 + 30 + 100 + 100)


def test_five_fold_is_the_mean_of_consecutive_folds() -> None:
    rng = np.random.default_rng(0)
    sims = rng.random((50, 250))
    folds = [recall(sims[f * 10:(f + 1) * 10, f * 50:(f + 1) * 50]) for f in range(5)]
    got = coco_1k(sims)
    assert got["rsum"] == pytest.approx(np.mean([f["rsum"] for f in folds]))
    sims[:10, :50] += np.kron(np.eye(10), np.ones((1, 5))) * 10  # fold 0 perfect: only it changes
    assert coco_1k(sims)["i2t_r1"] == pytest.approx((100 + sum(f["i2t_r1"] for f in folds[1:])) / 5)


def test_shape_check_and_ensembles(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="need 10 captions"):
        recall(np.zeros((2, 9)))
    a, b = np.eye(2).repeat(5, axis=1), np.zeros((2, 10))
    got = ensemble([save_sims(tmp_path / "a.npy", a), save_sims(tmp_path / "b.npy", b)])
    assert np.allclose(got, a / 2)
    with pytest.raises(ValueError, match="differ in shape"):
        ensemble([tmp_path / "a.npy", save_sims(tmp_path / "c.npy", np.zeros((3, 15)))])
