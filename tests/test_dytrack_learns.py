"""DyTrack learns and its exits behave (heavy, one build and one training run shared):
held-out synthetic sequences tracked well above a static box, a lower exit threshold stops
earlier, a middle threshold keeps the deepest exit's AUC at a fraction of its depth, and easy
sequences stop earlier than hard ones. Then the CLI's eval writes both toolkits' files."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fusionweave.orchestration.cli import main
from fusionweave.pipelines.tracking.synthetic import generate

pytestmark = pytest.mark.heavy


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict:
    import yaml

    from fusionweave.trainers.core.loop import fit
    from fusionweave.trainers.dytrack.config import DyTrackConfig
    from fusionweave.trainers.dytrack.method import DyTrackMethod

    root = tmp_path_factory.mktemp("dytrack")
    generate(root / "train", easy=8, hard=8, frames=30, seed=0)
    generate(root / "test", easy=4, hard=4, frames=30, seed=1)
    recipe = root / "tracking.yaml"
    recipe.write_text(yaml.safe_dump({"tracking": {"sources": [
        {"name": "train", "layout": "lasot", "root": str(root / "train")},
        {"name": "test", "layout": "lasot", "root": str(root / "test")}]}}))
    build = root / "build"
    assert main(["build", "tracking", "--config", str(recipe), "--out", str(build), "--no-progress",
                 "--num-cpus", "2"]) == 0
    shards = build / "tracking"
    cfg = DyTrackConfig.model_validate({
        "train": [str(p) for p in sorted(shards.glob("train-*.tar"))], "threads": 1, "backbone_lr_scale": 1.0,
        "recipe": {"epochs": 20, "lr": 1e-3, "weight_decay": 1e-4, "grad_clip": 1.0, "device": "cpu",
                   "warmup_ratio": 0.05}})
    fit(DyTrackMethod(cfg), root / "run", progress=False)
    return {"root": root, "test": sorted(shards.glob("test-*.tar")), "run": root / "run", "cfg": cfg}


def test_tracks_better_than_a_static_box_and_exits_behave(trained: dict) -> None:
    from fusionweave.trainers.dytrack.data import read_sequences
    from fusionweave.trainers.dytrack.evaluate import score, sequence_names, track_all
    from fusionweave.trainers.dytrack.method import load_model
    from fusionweave.trainers.dytrack.track import TrackResult

    seqs = read_sequences(trained["test"])
    names = sequence_names(seqs)
    net, _ = load_model(trained["run"] / "final")
    track = trained["cfg"].track
    static = [TrackResult(np.repeat(np.array(s[0]["box"])[None], len(s), 0), np.ones(len(s)), np.zeros(len(s)),
                          np.zeros(len(s), dtype=np.int64)) for s in seqs]
    base = score(names, seqs, static, 6)["auc"]
    runs = {t: score(names, seqs, track_all(net, seqs, [t, t], track), 6) for t in (0.0, 0.5, 1.01)}
    deep, mid, low = runs[1.01], runs[0.5], runs[0.0]
    print(f"\nstatic AUC {base:.1f}; threshold -> (AUC, mean depth): "
          + ", ".join(f"{t}: ({r['auc']:.1f}, {r['mean_depth']:.2f})" for t, r in runs.items()))
    assert deep["auc"] >= base + 20, (deep["auc"], base)  # AUC in percent: +0.2
    assert deep["mean_depth"] == 6 and low["mean_depth"] == 2
    assert low["mean_depth"] < mid["mean_depth"] < deep["mean_depth"]
    assert mid["auc"] >= deep["auc"] - 5 and mid["mean_depth"] <= 0.75 * 6
    depth = {n: v["mean_depth"] for n, v in mid["per_sequence"].items()}
    easy = np.mean([d for n, d in depth.items() if "/easy-" in n])
    hard = np.mean([d for n, d in depth.items() if "/hard-" in n])
    print(f"mean exit depth at 0.5: easy {easy:.2f}, hard {hard:.2f}")
    assert easy < hard


def test_cli_eval_writes_both_toolkits_files(trained: dict, capsys: pytest.CaptureFixture) -> None:
    out = trained["root"] / "eval"
    data = trained["root"] / "build" / "tracking"
    assert main(["eval", "dytrack", "--checkpoint", str(trained["run"] / "final"), "--data", str(data),
                 "--out", str(out), "--sweep", "0.2,0.8"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["sequences"] == 24 and 0 < res["auc"] <= 100 and 2 <= res["mean_depth"] <= 6
    boxes = np.loadtxt(out / "pytracking" / "test-easy-1.txt", delimiter="\t")
    got = np.loadtxt(out / "got10k" / "test-easy-1" / "test-easy-1_001.txt", delimiter=",")
    assert boxes.shape == (30, 4) and np.allclose(boxes, got)
    assert (out / "got10k" / "test-easy-1" / "test-easy-1_time.txt").is_file()
    assert {p.name for p in out.glob("*.png")} == {"success.png", "precision.png", "norm_precision.png",
                                                  "tradeoff.png"}
    sweep = json.loads((out / "tradeoff.json").read_text())
    assert [p["threshold"] for p in sweep] == [0.2, 0.8] and sweep[0]["mean_depth"] <= sweep[1]["mean_depth"]
    # the same files scored again as another tracker's results give the same numbers
    again = out / "again"
    assert main(["eval", "dytrack", "--results", str(out / "pytracking"), "--data", str(data), "--out", str(again)]) == 0
    assert json.loads((again / "results.json").read_text())["auc"] == pytest.approx(res["auc"], abs=1e-3)
    capsys.readouterr()
    assert main(["eval", "dytrack", "--data", str(data), "--out", str(again), "--checkpoint", str(data)]) == 2
    assert "not a DyTrack model folder" in capsys.readouterr().err
