"""The continual report: the matrix a[t][j] (score on modality j after stage t, None before j is
learned), and the standard continual-learning summaries over it (T = the last stage):
- average: mean_j a[T][j];
- forgetting F_j = max_{t<T} a[t][j] - a[T][j] for every j learned before the last stage, and its mean;
- backward transfer BWT = mean_j (a[T][j] - a[learned(j)][j]) over the same j;
- plasticity: a[learned(j)][j], each modality's score right after its own stage, and its mean.
Written as JSON and as a heat-map PNG."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def continual_metrics(matrix: list[list[float | None]], modalities: list[str]) -> dict[str, Any]:
    T = len(matrix) - 1
    learned = {j: next(t for t, row in enumerate(matrix) if row[j] is not None) for j in range(len(modalities))}
    final = matrix[T]
    earlier = [j for j in range(len(modalities)) if learned[j] < T]
    forgetting = {modalities[j]: max(matrix[t][j] for t in range(learned[j], T)) - final[j] for j in earlier}
    plasticity = {modalities[j]: matrix[learned[j]][j] for j in range(len(modalities))}
    mean = lambda xs: sum(xs) / len(xs) if xs else None  # noqa: E731
    return {"average": mean([v for v in final if v is not None]),
            "forgetting": forgetting, "mean_forgetting": mean(list(forgetting.values())),
            "bwt": mean([final[j] - matrix[learned[j]][j] for j in earlier]),
            "plasticity": plasticity, "mean_plasticity": mean(list(plasticity.values()))}


def heatmap(matrix: list[list[float | None]], rows: list[str], modalities: list[str], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    data = np.array([[np.nan if v is None else v for v in row] for row in matrix], dtype=float)
    fig, ax = plt.subplots(figsize=(1.4 * len(modalities) + 2, 0.7 * len(rows) + 1.5))
    im = ax.imshow(data, cmap="viridis", vmin=0, vmax=max(100.0, float(np.nanmax(data)) if data.size else 100.0))
    ax.set_xticks(range(len(modalities)), modalities)
    ax.set_yticks(range(len(rows)), [f"after {r}" for r in rows])
    for (t, j), v in np.ndenumerate(data):
        if not np.isnan(v):
            ax.text(j, t, f"{v:.1f}", ha="center", va="center", color="w" if v < 60 else "k", fontsize=9)
    ax.set_title(title)
    fig.colorbar(im, ax=ax, label="score (EM / accuracy %, CIDEr x 100)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(out: Path, baseline: str, rows: list[str], modalities: list[str],
                 matrix: list[list[float | None]], extra: dict[str, Any]) -> dict[str, Any]:
    report = {"method": baseline, "modalities": modalities, "stages": rows, "matrix": matrix,
              **continual_metrics(matrix, modalities), **extra}
    (out / "continual.json").write_text(json.dumps(report, indent=1))
    heatmap(matrix, rows, modalities, f"{baseline}: score on modality (column) after stage (row)", out / "matrix.png")
    return report
