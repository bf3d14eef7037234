"""Image-text retrieval metrics as the matching papers report them.

`sims` is (images, captions) with 5 captions per image in order: caption c belongs to image
c // 5. Image->text takes the best rank among the image's 5 captions; text->image ranks the one
image of each caption. R@1/5/10 in both directions (percent) and rSum, their sum. COCO 1K is the
mean over five consecutive 1,000-image folds of the 5K test set; ensembles average matrices.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

CAPS_PER_IMAGE = 5
KS = (1, 5, 10)


def i2t_ranks(sims: np.ndarray, per_image: int = CAPS_PER_IMAGE) -> np.ndarray:
    """For each image, the best (lowest) 0-based rank of any of its captions."""
    n_img = sims.shape[0]
    order = np.argsort(-sims, axis=1, kind="stable")
    owner = order // per_image  # which image each ranked caption belongs to
    hit = owner == np.arange(n_img)[:, None]
    return hit.argmax(axis=1)


def t2i_ranks(sims: np.ndarray, per_image: int = CAPS_PER_IMAGE) -> np.ndarray:
    """For each caption, the 0-based rank of its image."""
    order = np.argsort(-sims.T, axis=1, kind="stable")
    truth = np.arange(sims.shape[1]) // per_image
    return (order == truth[:, None]).argmax(axis=1)


def recall(sims: np.ndarray, per_image: int = CAPS_PER_IMAGE) -> dict[str, float]:
    if sims.shape[1] != sims.shape[0] * per_image:
        raise ValueError(f"{sims.shape[0]} images need {sims.shape[0] * per_image} captions, got {sims.shape[1]}")
    ri, rt = i2t_ranks(sims, per_image), t2i_ranks(sims, per_image)
    out = {f"i2t_r{k}": 100.0 * float(np.mean(ri < k)) for k in KS}
    out.update({f"t2i_r{k}": 100.0 * float(np.mean(rt < k)) for k in KS})
    out["rsum"] = sum(out[f"{d}_r{k}"] for d in ("i2t", "t2i") for k in KS)
    return out


def coco_1k(sims: np.ndarray, folds: int = 5, per_image: int = CAPS_PER_IMAGE) -> dict[str, float]:
    """Mean of each metric over consecutive folds of the 5K test set (1,000 images each)."""
    n = sims.shape[0] // folds
    parts = [recall(sims[f * n:(f + 1) * n, f * n * per_image:(f + 1) * n * per_image], per_image)
             for f in range(folds)]
    return {k: float(np.mean([p[k] for p in parts])) for k in parts[0]}


def save_sims(path: str | Path, sims: np.ndarray) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, sims.astype(np.float32))
    return path


def ensemble(paths: list[str | Path]) -> np.ndarray:
    """The average of saved similarity matrices (the papers' ensembles, e.g. SGR + SAF)."""
    mats = [np.load(p) for p in paths]
    if len({m.shape for m in mats}) != 1:
        raise ValueError(f"similarity matrices differ in shape: {[m.shape for m in mats]}")
    return np.mean(mats, axis=0)
