"""DyTrack: frames/s with dynamic exits vs always running the full depth, same weights, same frames.

1. Real size (random weights): the paper's OSTrack-B base (ViT-B: dim 768, 12 layers, 12 heads,
   patch 16, 128 px template / 256 px search) with exits after layers 4, 8, 12; per-frame
   `track_step` time when every frame stops at exit 1, exit 2, or runs the full depth. With random
   weights the confidences mean nothing, so this is the speed each exit depth buys.
2. Trained (`--checkpoint RUN/final --data SHARDS`): the tracker on real sequences; a threshold
   sweep, and the fastest threshold whose AUC is within `--auc-tol` points of the full depth's,
   against the full depth: the speed-up at equal AUC.

    python benchmarks/bench_dytrack.py [--frames 30] [--checkpoint RUN/final --data BUILD/tracking]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import Result, emit, parse  # noqa: E402
from fusionweave.trainers.dytrack.config import ModelConfig
from fusionweave.trainers.dytrack.model import DyTrackNet

REAL = ModelConfig(dim=768, depth=12, heads=12, mlp_ratio=4, patch=16, template_size=128, search_size=256,
                   exits=[4, 8, 12], head_dim=256)


def real_size(frames: int, repeat: int) -> list[Result]:
    torch.manual_seed(0)
    net = DyTrackNet(REAL).eval()
    t = torch.randint(0, 256, (1, 3, 128, 128), dtype=torch.uint8)
    s = torch.randint(0, 256, (frames, 1, 3, 256, 256), dtype=torch.uint8)
    settings = {"exit 1 (4 layers)": [0.0, 0.0], "exit 2 (8 layers)": [2.0, 0.0], "full (12 layers)": [2.0, 2.0]}
    best = {k: float("inf") for k in settings}
    net.track_step(t, s[0], [2.0, 2.0])  # warm-up
    for _ in range(repeat):  # alternated, best of each
        for name, th in settings.items():
            t0 = time.perf_counter()
            for i in range(frames):
                net.track_step(t, s[i], th)
            best[name] = min(best[name], time.perf_counter() - t0)
    fps = {k: frames / v for k, v in best.items()}
    full = fps.pop("full (12 layers)")
    return [Result(f"dytrack/{k}", f"OSTrack-B size (random weights) stopping at {k} vs the full 12 layers, "
                   f"{frames} frames", v, full, "frames/s") for k, v in fps.items()]


def trained(checkpoint: Path, data: list[Path], sweep: list[float], tol: float) -> list[Result]:
    from fusionweave.trainers.dytrack.config import TrackConfig
    from fusionweave.trainers.dytrack.data import read_sequences
    from fusionweave.trainers.dytrack.evaluate import score, sequence_names, track_all
    from fusionweave.trainers.dytrack.method import load_model

    net, saved = load_model(checkpoint)
    cfg = TrackConfig.model_validate(saved["track"])
    seqs = read_sequences(data)
    names = sequence_names(seqs)
    k = len(net.cfg.exits) - 1
    runs = {}
    for th in [2.0, *sweep, 2.0]:  # the full depth first and last: the machine's drift shows
        sc = score(names, seqs, track_all(net, seqs, [th] * k, cfg), net.cfg.depth)
        prev = runs.get(th)
        if prev is None or sc["fps"] > prev["fps"]:
            runs[th] = {key: round(sc[key], 3) for key in ("auc", "mean_depth", "fps")}
    full = runs[2.0]
    ok = [th for th in sweep if runs[th]["auc"] >= full["auc"] - tol]
    pick = max(ok, key=lambda th: runs[th]["fps"]) if ok else None
    if pick is None:
        return []
    return [Result("dytrack/trained, equal AUC", f"the fastest exit threshold ({pick}) within {tol} AUC of full depth "
                   f"vs full depth, trained tracker, {len(seqs)} sequences", runs[pick]["fps"], full["fps"], "frames/s",
                   None, {"full": full, "sweep": {str(th): runs[th] for th in sweep}})]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=30)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--checkpoint", type=Path)
    ap.add_argument("--data", type=Path, nargs="+", help="tracking shards (a stage folder or shard files)")
    ap.add_argument("--sweep", default="0.2,0.3,0.4,0.5,0.6,0.7,0.8")
    ap.add_argument("--auc-tol", type=float, default=1.0, help="AUC points (percent) counted as equal")
    a = parse(ap, {"ci": {"frames": 2, "repeat": 1}})
    torch.set_num_threads(a.threads)
    results = real_size(a.frames, a.repeat)
    if a.checkpoint is not None and a.data is not None:
        results += trained(a.checkpoint, a.data, [float(x) for x in a.sweep.split(",")], a.auc_tol)
    emit(results, a)


if __name__ == "__main__":
    main()
