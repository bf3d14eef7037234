"""`fusionweave eval dytrack`: tracked sequences scored by both toolkits' definitions (metrics.py)
with fps and mean exit depth, and written out:

- `pytracking/<seq>.txt` (boxes, tab-separated) and `<seq>_time.txt` (pytracking's results);
- `got10k/<seq>/<seq>_001.txt` (boxes, comma-separated), `<seq>_time.txt` (got10k-toolkit's);
- `<seq>_exits.txt` beside the pytracking files (exit index and layers run per frame);
- `results.json` (overall and per-sequence scores), `success.png`, `precision.png`,
  `norm_precision.png` and, for a threshold sweep, `tradeoff.json` / `tradeoff.png`.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from fusionweave.trainers.dytrack import metrics as M
from fusionweave.trainers.dytrack.data import Frame
from fusionweave.trainers.dytrack.track import TrackResult


def ground_truth(frames: list[Frame]) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, int], bool]:
    """(boxes, visible, cover, (W, H), lasot?) of a sequence from its frames' JSON. Frames with no
    box (a test split's) are zero boxes: invalid, as the toolkits treat them."""
    boxes = np.array([f["box"] if f.get("box") is not None else [0, 0, 0, 0] for f in frames], dtype=np.float64)
    visible = np.array([bool(f.get("visible", True)) for f in frames])
    cover = np.array([f["cover"] if f.get("cover") is not None else int(v) for f, v in zip(frames, visible)])
    return boxes, visible, cover, (frames[0]["width"], frames[0]["height"]), frames[0].get("layout") == "lasot"


def score(names: Sequence[str], sequences: Sequence[list[Frame]], results: Sequence[TrackResult],
          n_layers: int) -> dict[str, Any]:
    errs, ious, times = [], [], []
    for frames, r in zip(sequences, results):
        gt, vis, cover, bound, lasot = ground_truth(frames)
        errs.append(M.sequence_errors(r.boxes, gt, vis, lasot=lasot))
        ious.append(M.got10k_sequence_ious(r.boxes, gt, cover, bound))
        times.append(r.times[1:])
    curves = M.pytracking_curves(list(names), errs)
    got = M.got10k_scores(ious, times)
    depths = np.concatenate([r.depths[1:] for r in results])
    per = curves.per_sequence()
    for n, r in zip(names, results):
        per[n]["mean_depth"] = float(r.depths[1:].mean()) if len(r.depths) > 1 else 0.0
    return {"auc": curves.auc, "precision_20": curves.precision_20, "norm_precision_20": curves.norm_precision_20,
            "ao": got["ao"], "sr50": got["sr50"], "sr75": got["sr75"], "fps": got["fps"],
            "mean_depth": float(depths.mean()) if depths.size else 0.0,
            "mean_depth_ratio": float(depths.mean() / n_layers) if depths.size else 0.0,
            "sequences": len(names), "frames": int(sum(len(s) for s in sequences)),
            "curves": {"success": curves.success.mean(0).tolist(), "precision": curves.precision.mean(0).tolist(),
                       "norm_precision": curves.norm_precision.mean(0).tolist()},
            "per_sequence": per}


def safe_name(name: str) -> str:
    return name.replace("/", "-")


def write_results(out: Path, names: Sequence[str], results: Sequence[TrackResult], scores: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "pytracking").mkdir(exist_ok=True)
    for name, r in zip(names, results):
        n = safe_name(name)
        np.savetxt(out / "pytracking" / f"{n}.txt", r.boxes, delimiter="\t", fmt="%.4f")
        np.savetxt(out / "pytracking" / f"{n}_time.txt", r.times, fmt="%.6f")
        np.savetxt(out / "pytracking" / f"{n}_exits.txt", np.stack([r.exits, r.depths], 1), delimiter="\t", fmt="%d")
        g = out / "got10k" / n
        g.mkdir(parents=True, exist_ok=True)
        np.savetxt(g / f"{n}_001.txt", r.boxes, delimiter=",", fmt="%.4f")
        np.savetxt(g / f"{n}_time.txt", r.times, fmt="%.6f")
    (out / "results.json").write_text(json.dumps(scores, indent=1))
    plot_curves(out, scores["curves"])


def load_results(folder: Path, names: Sequence[str]) -> list[TrackResult]:
    """Boxes of another tracker in pytracking's layout (`<seq>.txt`, tab or comma separated;
    `<seq>_time.txt` optional) to score with the same protocol."""
    res = []
    for name in names:
        f = folder / f"{safe_name(name)}.txt"
        if not f.is_file():
            raise FileNotFoundError(f"{f}: no result for sequence {name}")
        try:
            boxes = np.loadtxt(f, delimiter="\t" if "\t" in f.read_text() else ",", ndmin=2)
        except ValueError as err:
            raise M.InvalidResults(f"{f}: {err}") from None
        t = folder / f"{safe_name(name)}_time.txt"
        times = np.loadtxt(t, ndmin=1) if t.is_file() else np.zeros(len(boxes))
        res.append(TrackResult(boxes, times, np.full(len(boxes), -1), np.zeros(len(boxes), dtype=np.int64)))
    return res


def plot_curves(out: Path, curves: dict[str, list[float]]) -> list[Path]:
    """Success, precision and normalised precision plots (PNG; none without matplotlib)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    written = []
    for key, x, xlabel in (("success", M.OVERLAP_THRESHOLDS, "overlap threshold"),
                           ("precision", M.CENTER_THRESHOLDS, "location error threshold (px)"),
                           ("norm_precision", M.NORM_CENTER_THRESHOLDS, "normalised location error threshold")):
        fig, ax = plt.subplots(figsize=(4, 3))
        y = np.asarray(curves[key])
        label = f"AUC {y.mean() * 100:.1f}" if key == "success" else f"@{x[20]:g}: {y[20] * 100:.1f}"
        ax.plot(x, y, label=label)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("rate")
        ax.legend()
        fig.tight_layout()
        path = out / f"{key}.png"
        fig.savefig(path, dpi=80)
        plt.close(fig)
        written.append(path)
    return written


def plot_tradeoff(out: Path, points: list[dict[str, float]]) -> None:
    (out / "tradeoff.json").write_text(json.dumps(points, indent=1))
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(4, 3))
    ax.plot([p["mean_depth"] for p in points], [p["auc"] for p in points], "o-")
    ax.set_xlabel("mean exit depth (layers)")
    ax.set_ylabel("success AUC")
    fig.tight_layout()
    fig.savefig(out / "tradeoff.png", dpi=80)
    plt.close(fig)


def track_all(net: Any, sequences: Sequence[list[Frame]], thresholds: list[float], cfg: Any) -> list[TrackResult]:
    from fusionweave.trainers.dytrack.track import track_sequence

    return [track_sequence(net, s, thresholds, cfg) for s in sequences]


def sequence_names(sequences: Sequence[list[Frame]]) -> list[str]:
    return [f"{s[0]['source']}/{s[0]['sequence']}" for s in sequences]


def run_eval(checkpoint: Path | None, data: list[Path], out: Path, thresholds: list[float] | None = None,
             sweep: list[float] | None = None, results: Path | None = None) -> dict[str, Any]:
    """Track `data`'s sequences with a saved DyTrack (or score another tracker's `results`),
    write the per-sequence files, results.json and plots; `sweep`: one run per exit threshold
    (the same at every exit), giving the success-vs-depth trade-off."""
    from fusionweave.pipelines.errors import BuildSetupError
    from fusionweave.trainers.dytrack.config import TrackConfig
    from fusionweave.trainers.dytrack.data import read_sequences
    from fusionweave.trainers.dytrack.method import load_model

    from fusionweave.trainers.shard_plan import ShardUnreadable

    try:
        sequences = read_sequences(data)
    except (FileNotFoundError, ShardUnreadable) as err:
        raise BuildSetupError(f"--data: {err}") from None
    if not sequences:
        raise BuildSetupError(f"--data {[str(d) for d in data]}: no tracking frames in these shards")
    names = sequence_names(sequences)
    try:
        if results is not None:
            res = load_results(results, names)
            scores = score(names, sequences, res, 1)
            write_results(out, names, res, scores)
            return scores
        if checkpoint is None:
            raise BuildSetupError("eval dytrack needs --checkpoint (a trained model folder) or --results")
        net, saved = load_model(checkpoint)
        cfg = TrackConfig.model_validate(saved["track"])
        n_exits = len(net.cfg.exits)
        th = thresholds if thresholds is not None else cfg.thresholds
        if len(th) != n_exits - 1:
            raise BuildSetupError(f"--thresholds: {n_exits - 1} values (one per exit but the last), got {len(th)}")
        res = track_all(net, sequences, th, cfg)
        scores = {**score(names, sequences, res, net.cfg.depth), "thresholds": th}
        write_results(out, names, res, scores)
        if sweep:
            points = []
            for t in sweep:
                sc = score(names, sequences, track_all(net, sequences, [t] * (n_exits - 1), cfg), net.cfg.depth)
                points.append({"threshold": t, **{k: sc[k] for k in ("auc", "precision_20", "ao", "mean_depth",
                                                                     "fps")}})
            plot_tradeoff(out, points)
            scores["tradeoff"] = points
        return scores
    except (M.InvalidResults, FileNotFoundError) as err:
        raise BuildSetupError(f"eval dytrack: {err}") from None
