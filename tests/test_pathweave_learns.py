"""`fusionweave train pathweave` end to end on a `fusionweave build mcl` of closed-answer sources
(colour, motion direction, pitch class, nearest quadrant, primitive; chance 25%), with tiny models
on CPU: PathWeave and the sequential-finetune baseline trained once each and checked together, then
a run killed in its last stage and resumed."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT, cli, kill_build_when
from tests.pathweave_helpers import MODALITIES, tiny_config, tiny_models, tiny_models_of

pytestmark = pytest.mark.heavy
CHANCE = 25.0
ENV = {"OMP_NUM_THREADS": "1"}  # tiny matrices: one thread is several times faster than two contending


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("pathweave")
    r = cli("sample-mcl", "--closed", "--out", str(root / "src"), env=ENV)
    assert r.returncode == 0, r.stderr[-2000:]
    r = cli("build", "mcl", "--config", str(root / "src" / "mcl.yaml"), "--out", str(root / "build"), "--no-progress",
            env=ENV)
    assert r.returncode == 0, r.stderr[-3000:]
    cfg = tiny_config(root / "pathweave.yaml", root / "build", tiny_models(root / "models"))
    out = {"root": root, "config": cfg}
    # the two runs side by side: each is one thread, and there are two cores
    runs = {name: subprocess.Popen([sys.executable, "-m", "fusionweave.orchestration.cli", "train", "pathweave",
                                    "--config", str(cfg), "--out", str(root / name), "--no-progress", *extra],
                                   cwd=ROOT, env={**os.environ, **ENV}, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE, text=True)
            for name, extra in (("pathweave", []), ("sequential", ["--set", "method.baseline=sequential-finetune"]))}
    for name, proc in runs.items():
        _, err = proc.communicate(timeout=900)
        assert proc.returncode == 0, err[-3000:]
        out[name] = json.loads((root / name / "continual.json").read_text())
    return out


def test_every_stage_learns_its_modality(runs: dict) -> None:
    m = runs["pathweave"]["matrix"]
    print("pathweave matrix (rows: after stage; columns:", MODALITIES, ")")
    for row in m:
        print("  ", row)
    for t in range(len(MODALITIES)):
        assert m[t][t] >= 2.5 * CHANCE, (MODALITIES[t], m[t][t])


def test_pathweave_keeps_earlier_modalities(runs: dict) -> None:
    pw = runs["pathweave"]
    assert all(f <= 3.0 for f in pw["forgetting"].values()), pw["forgetting"]
    seq = runs["sequential"]
    print("sequential-finetune matrix:", seq["matrix"], "forgetting:", seq["forgetting"])
    first = MODALITIES[1]  # the first modality learned with adapters (image is the bridge's own)
    assert seq["forgetting"][first] >= pw["forgetting"][first] + 20, (seq["forgetting"], pw["forgetting"])


def test_only_the_stage_adapters_train(runs: dict) -> None:
    root = runs["root"] / "pathweave"
    for t, m in enumerate(MODALITIES[1:], 1):
        info = json.loads((root / f"stage{t}-{m}" / "trainable.json").read_text())
        assert info["trainable_share"] < 0.05, (m, info["trainable_share"])
        for name in info["trainable"]:
            assert f".experts.{m}." in name or f".inner.{m}__" in name or f".gates.{m}." in name, name
        assert any(f".experts.{m}." in n for n in info["trainable"])
        if t >= 2:  # earlier experts exist: one in-adapter per earlier modality, and a gate
            for earlier in MODALITIES[1:t]:
                assert any(f".inner.{m}__{earlier}." in n for n in info["trainable"]), (m, earlier)
            assert any(f".gates.{m}." in n for n in info["trainable"])
            assert info["gates_uniform_at_start"] is True
    assert runs["pathweave"]["trainable_share"]["video"] < 0.05


def test_report_files(runs: dict) -> None:
    root = runs["root"] / "pathweave"
    assert (root / "matrix.png").stat().st_size > 1000
    rep = runs["pathweave"]
    assert rep["stages"] == list(MODALITIES) and len(rep["matrix"]) == 5
    assert set(rep) >= {"average", "forgetting", "bwt", "plasticity", "trainable_share", "final"}
    ev = json.loads((root / "stage4-pointcloud" / "eval.json").read_text())
    assert {s["modality"] for s in ev["sets"].values()} == set(MODALITIES)


def test_runs_the_sample_mcl_build(runs: dict, mcl_built: dict, tmp_path: Path) -> None:
    """The five stages of `fusionweave sample-mcl`'s build (the session's, tests/builds.py): captions
    scored against the exported COCO-format ground truth, QA, out-of-domain scene classes."""
    cfg = tiny_config(tmp_path / "sample.yaml", mcl_built["out"], tiny_models_of(runs["root"] / "models"),
                      steps={m: 1 for m in MODALITIES}, batch_size=2)
    r = cli("train", "pathweave", "--config", str(cfg), "--out", str(tmp_path / "run"), "--no-progress",
            "--set", "eval.caption.max_new_tokens=3", env=ENV)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads((tmp_path / "run" / "continual.json").read_text())["stages"] == list(MODALITIES)
    sets = json.loads((tmp_path / "run" / "stage4-pointcloud" / "eval.json").read_text())["sets"]
    assert {s["modality"] for s in sets.values()} == set(MODALITIES)
    captions = [s for s in sets.values() if s["task"] == "caption"]
    assert captions and all({"bleu4", "rouge_l", "cider"} <= set(s) for s in captions)
    assert sets["nyu"]["task"] == "cls" and "accuracy" in sets["nyu"]


def test_killed_in_a_stage_resumes_to_the_same_matrix(runs: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    """The finished stages are kept, the last one is killed after a checkpoint and rerun."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the killed process too: the same arithmetic as the reference
    root = runs["root"]
    out = root / "killed"
    shutil.copytree(root / "pathweave", out)
    last = out / "stage4-pointcloud"
    shutil.rmtree(last)
    (out / "continual.json").unlink()
    args = ["train", "pathweave", "--config", str(runs["config"]), "--out", str(out), "--no-progress"]
    kill_build_when(args, lambda: (last / "state" / "progress.json").exists())
    assert not (last / "eval.json").exists()
    r = cli(*args, env=ENV)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads((out / "continual.json").read_text())["matrix"] == runs["pathweave"]["matrix"]
