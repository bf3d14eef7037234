"""A caption-engine SFT killed mid-epoch (as kill -9) and rerun resumes at the next batch: the same
per-step losses and the same engine weights as a run that was never stopped."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.caption_engine_data import engine_config, make_set, tiny_pivot
from tests.helpers import ROOT

pytestmark = pytest.mark.heavy  # three subprocess trainings (~1 min)

CODE = """
import json, os, sys
from pathlib import Path
from fusionweave.trainers.caption_engine.config import EngineConfig
from fusionweave.trainers.caption_engine.method import CaptionEngineMethod
from fusionweave.trainers.core.loop import fit

class Killed(CaptionEngineMethod):
    def loss(self, model, batch, ctx):
        if ctx.step == int(sys.argv[3]):
            os._exit(9)  # as kill -9: no cleanup, no exception
        return super().loss(model, batch, ctx)

fit(Killed(EngineConfig.model_validate(json.loads(Path(sys.argv[1]).read_text()))), Path(sys.argv[2]), progress=False)
"""


def test_a_killed_sft_resumes_to_the_same_final_loss(tmp_path: Path) -> None:
    data = make_set(tmp_path / "data", 24)
    cfg = engine_config(tiny_pivot(tmp_path / "pivot"), data["sft"], data={"batch_size": 4},
                        recipe={"epochs": 2, "save_every": 4})
    cfg_file = tmp_path / "cfg.json"
    cfg_file.write_text(json.dumps(cfg))
    run = lambda out, kill: subprocess.run([sys.executable, "-c", CODE, str(cfg_file), str(out), str(kill)],  # noqa: E731
                                           cwd=ROOT, capture_output=True, text=True, timeout=600)
    whole = run(tmp_path / "whole", -1)
    assert whole.returncode == 0, whole.stderr[-2000:]
    killed = run(tmp_path / "killed", 9)  # after the checkpoint at step 8, mid-epoch 2 (6 steps each)
    assert killed.returncode == 9 and not (tmp_path / "killed" / "engine").exists()
    again = run(tmp_path / "killed", -1)
    assert again.returncode == 0, again.stderr[-2000:]
    steps = lambda out: [json.loads(x) for x in (out / "steps.jsonl").read_text().splitlines()]  # noqa: E731
    a, b = steps(tmp_path / "whole"), steps(tmp_path / "killed")
    assert [r["step"] for r in b] == list(range(1, 13))
    assert [r["loss"] for r in b] == pytest.approx([r["loss"] for r in a], rel=1e-5)
    ea, eb = (json.loads((tmp_path / k / "engine" / "engine.json").read_text()) for k in ("whole", "killed"))
    assert ea["final_loss"] == pytest.approx(eb["final_loss"], rel=1e-6) and ea["step"] == eb["step"] == 12
    from safetensors.torch import load_file

    wa, wb = (load_file(tmp_path / k / "engine" / "model.safetensors") for k in ("whole", "killed"))
    import torch

    # Equal to the bit in every run but one (a full suite, losses still matched to 1e-5): Adam divides by
    # sqrt(v), so rounding noise in a near-zero gradient moves a weight by far more than the noise.
    far = {k: float((wa[k] - wb[k]).abs().max()) for k in wa if not torch.allclose(wa[k], wb[k], rtol=1e-4, atol=1e-5)}
    assert not far, f"weights differ after the resume: {far}"
