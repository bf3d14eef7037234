"""PNG plots for the dataset card, drawn from the build's real numbers."""
from __future__ import annotations

from collections import Counter

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from fusionweave.pipelines.storage.atomic import atomic_path  # noqa: E402
from fusionweave.pipelines.storage.location import Loc  # noqa: E402


def _save(fig: "plt.Figure", path: Loc) -> Loc:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return path


def caption_lengths(words: list[int], path: Loc) -> Loc | None:
    if not words:
        return None
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.hist(words, bins=min(50, max(5, len(set(words)))), color="#4c72b0")
    ax.set_xlabel("caption length (words)")
    ax.set_ylabel("samples")
    ax.set_title(f"Caption length, {len(words):,} samples")
    return _save(fig, path)


def image_sizes(sizes: list[tuple[int, int]], path: Loc) -> Loc | None:
    if not sizes:
        return None
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.scatter([w for w, _ in sizes], [h for _, h in sizes], s=4, alpha=0.5, color="#55a868")
    ax.set_xlabel("width (px)")
    ax.set_ylabel("height (px)")
    ax.set_title(f"Image sizes, {len(sizes):,} samples")
    return _save(fig, path)


def rejects_by_reason(rejects: Counter, path: Loc) -> Loc | None:
    if not rejects:
        return None
    items = sorted(rejects.items(), key=lambda kv: kv[1])
    fig, ax = plt.subplots(figsize=(6, 0.3 * len(items) + 1))
    ax.barh([k for k, _ in items], [v for _, v in items], color="#c44e52")
    ax.set_xlabel("rows rejected")
    ax.set_title("Rejects by reason, all stages")
    return _save(fig, path)

