"""The select report: cluster sizes (histogram and PNG plot), duplicates SemDeDup would remove
at several eps values, and how many images were selected. Read file by file from the decision
tables, so memory is O(clusters), not O(images)."""
from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow.parquet as pq

from fusionweave.pipelines.storage.atomic import atomic_path
from fusionweave.pipelines.storage.build_folder import StageFolder
from fusionweave.pipelines.storage.published import published_files

PLOT = "cluster_sizes.png"
SIZE_BINS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000]


def size_histogram(sizes: np.ndarray) -> dict[str, int]:
    """Clusters per size range, e.g. {"0": 3, "1": 10, "2-4": 7, ...}."""
    out = {"0": int((sizes == 0).sum())}
    edges = SIZE_BINS + [np.inf]
    for lo, hi in zip(edges[:-1], edges[1:]):
        n = int(((sizes >= lo) & (sizes < hi)).sum())
        label = str(lo) if hi == lo + 1 else (f"{lo}-{int(hi) - 1}" if np.isfinite(hi) else f"{lo}+")
        if n or lo <= sizes.max(initial=0):
            out[label] = n
    return out


def plot_sizes(sizes: np.ndarray, path: Any, eps: float, top_n: int | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2))
    nonempty = sizes[sizes > 0]
    if len(nonempty):
        hi = max(2, int(nonempty.max()) + 1)
        bins = np.unique(np.geomspace(1, hi, num=min(40, hi)).astype(int))
        ax.hist(nonempty, bins=bins, color="#4c72b0")
        ax.set_xscale("log")
    ax.set_xlabel("images per cluster (before SemDeDup)")
    ax.set_ylabel("clusters")
    ax.set_title(f"{len(sizes):,} clusters, {int(sizes.sum()):,} images (eps {eps}, top {top_n})")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)


def summarise(folder: StageFolder, cfg: Any, kmeans: dict[str, Any]) -> dict[str, Any]:
    k = int(kmeans.get("clusters", 0))
    sizes = np.zeros(k, np.int64)
    sizes_after = np.zeros(k, np.int64)
    per_eps = {eps: 0 for eps in sorted({*cfg.semdedup.report_eps, cfg.semdedup.eps})}
    selected = duplicates = 0
    for f in published_files(folder.work / "decisions"):  # the published folder (a pointer names it)
        t = pq.read_table(f, columns=["cluster", "max_sim", "reason"])
        c = t.column("cluster").to_numpy()
        sizes += np.bincount(c, minlength=k)[:k]
        reason = t.column("reason").to_pylist()
        not_dup = np.array([r != "semantic_duplicate" for r in reason], bool)
        sizes_after += np.bincount(c[not_dup], minlength=k)[:k]
        m = t.column("max_sim").to_numpy(zero_copy_only=False)
        m = np.nan_to_num(m.astype(np.float64), nan=-np.inf)
        for eps in per_eps:
            per_eps[eps] += int((m > 1.0 - eps).sum())
        selected += sum(r is None for r in reason)
        duplicates += int((~not_dup).sum())
    plot_sizes(sizes, folder.dir / PLOT, cfg.semdedup.eps, cfg.top_n.n)
    return {
        "clusters": k,
        "cluster_size_histogram": size_histogram(sizes),
        "cluster_size_stats": {"min": int(sizes.min(initial=0)), "median": float(np.median(sizes)) if k else 0.0,
                               "max": int(sizes.max(initial=0)), "empty": int((sizes == 0).sum())},
        "clusters_after_semdedup_histogram": size_histogram(sizes_after),
        "duplicates_by_eps": {str(e): n for e, n in per_eps.items()},
        "semdedup": {"eps": cfg.semdedup.eps, "keep": cfg.semdedup.keep, "enabled": cfg.semdedup.enabled,
                     "removed": duplicates},
        "top_n": {"n": cfg.top_n.n, "rank": cfg.top_n.rank},
        "selected": selected,
        "plot": PLOT,
    }
