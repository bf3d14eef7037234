"""The training core (trainers/core): accumulation, schedules, clipping, checkpoints and resume
after a kill, the best metric across a resume, and a Ray Train run with 2 CPU workers whose loss
curve matches the single-process one. A toy regression method keeps each run a few seconds."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest
import torch

from fusionweave.trainers.core.loop import fit
from fusionweave.trainers.core.method import Method, StepContext
from fusionweave.trainers.core.recipe import Recipe

ROOT = Path(__file__).resolve().parents[1]


class ToyLoader:
    """Rows of a fixed regression set, reshuffled per epoch; rank r takes rows r::world of each
    global batch, so N processes see exactly what one process sees."""

    def __init__(self, n: int, batch: int, rank: int, world: int, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 8, generator=g)
        self.y = self.x @ torch.arange(1.0, 9.0) + 0.01 * torch.randn(n, generator=g)
        self.batch, self.rank, self.world, self.seed = batch, rank, world, seed
        self.epoch, self.done = 0, 0

    def __len__(self) -> int:
        return len(self.x) // self.batch

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self.done >= len(self):
            self.epoch, self.done = self.epoch + 1, 0
        order = torch.randperm(len(self.x), generator=torch.Generator().manual_seed(self.seed * 1000 + self.epoch))
        while self.done < len(self):
            rows = order[self.done * self.batch:(self.done + 1) * self.batch][self.rank::self.world]
            self.done += 1
            yield self.x[rows], self.y[rows]
        self.epoch, self.done = self.epoch + 1, 0

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "batches": self.done}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.done = state["epoch"], state["batches"]


class Toy(Method):
    name = "toy"
    metric = "score"

    def __init__(self, recipe: Recipe, batch: int = 16, n: int = 256, kill_at: int | None = None,
                 scores: list[float] | None = None, dropout: float = 0.1):
        super().__init__(recipe)
        self.batch, self.n, self.kill_at, self.scores, self.dropout = batch, n, kill_at, scores, dropout

    def model(self) -> torch.nn.Module:
        return torch.nn.Sequential(torch.nn.Dropout(self.dropout), torch.nn.Linear(8, 1))

    def loader(self, rank: int, world: int) -> ToyLoader:
        return ToyLoader(self.n, self.batch, rank, world)

    def loss(self, model: torch.nn.Module, batch: Any, ctx: StepContext) -> tuple[torch.Tensor, dict[str, float]]:
        if self.kill_at is not None and ctx.step == self.kill_at:
            os._exit(9)  # as kill -9: no cleanup, no exception
        x, y = batch
        return torch.nn.functional.mse_loss(model(x.to(ctx.device)).squeeze(-1), y.to(ctx.device)), {}

    def evaluate(self, model: torch.nn.Module, ctx: StepContext) -> dict[str, float]:
        return {"score": self.scores[ctx.epoch - 1] if self.scores else -float(model[1].weight.detach().sum())}

    def save_best(self, model: torch.nn.Module, out: Path, metrics: dict[str, float]) -> None:
        (out / "best.json").write_text(json.dumps(metrics))

    def save_final(self, model: torch.nn.Module, out: Path) -> None:
        torch.save(model.state_dict(), out / "final.pt")


def steps(out: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (out / "steps.jsonl").read_text().splitlines()]


def recipe(**kw: Any) -> Recipe:
    return Recipe(**{"epochs": 2, "lr": 0.05, "device": "cpu", **kw})


def test_accumulating_small_batches_is_one_big_batch(tmp_path: Path) -> None:
    fit(Toy(recipe(grad_accum=4, lr=0.02), batch=8), tmp_path / "acc", progress=False)
    fit(Toy(recipe(lr=0.02), batch=32), tmp_path / "big", progress=False)
    a, b = (torch.load(tmp_path / k / "final.pt") for k in ("acc", "big"))
    assert len(steps(tmp_path / "acc")) == len(steps(tmp_path / "big")) == 16  # 2 epochs x 256 / 32
    # same rows per optimiser step, gradients of the mean: the same weights (dropout masks differ)
    assert torch.allclose(a["1.weight"], b["1.weight"], atol=0.35), (a, b)


def test_schedule_warmup_then_cosine_and_step() -> None:
    r = Recipe(lr=1.0, warmup_ratio=0.1, schedule="cosine")
    f = [r.lr_factor(s, 10, 100) for s in range(100)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0) and f[-1] < 0.01
    assert all(a >= b for a, b in zip(f[10:], f[11:]))  # decays monotonically after the warm-up
    s = Recipe(lr=1.0, schedule="step", step_epochs=2, step_gamma=0.1)
    assert [s.lr_factor(k, 10, 100) for k in (0, 19, 20, 40)] == pytest.approx([1, 1, 0.1, 0.01])


@pytest.mark.heavy  # three subprocess runs (~20 s): the fast lane keeps its margin
def test_a_killed_run_resumes_to_the_same_final_loss(tmp_path: Path) -> None:
    code = ("import sys; from pathlib import Path; from tests.test_train_core import Toy, recipe; "
            "from fusionweave.trainers.core.loop import fit; "
            "k = None if sys.argv[2] == '-' else int(sys.argv[2]); "
            "fit(Toy(recipe(epochs=3, save_every=5), kill_at=k), Path(sys.argv[1]), progress=False)")
    run = lambda out, kill: subprocess.run([sys.executable, "-c", code, str(out), kill], cwd=ROOT,  # noqa: E731
                                           capture_output=True, text=True, timeout=300)
    whole = run(tmp_path / "whole", "-")
    assert whole.returncode == 0, whole.stderr[-2000:]
    killed = run(tmp_path / "killed", "23")  # after the checkpoint at step 20, mid-epoch 2 (16 steps each)
    assert killed.returncode == 9 and not (tmp_path / "killed" / "final.pt").exists()
    assert steps(tmp_path / "killed")[-1]["step"] == 23  # it logged past the checkpoint (step 20) before dying
    again = run(tmp_path / "killed", "-")
    assert again.returncode == 0, again.stderr[-2000:]
    a, b = steps(tmp_path / "whole"), steps(tmp_path / "killed")
    assert [r["step"] for r in b] == list(range(1, 49))  # the lines after the checkpoint were replaced, once
    assert [r["loss"] for r in b] == pytest.approx([r["loss"] for r in a], rel=1e-5)  # dropout RNG restored too
    # each epoch's line is the mean of all its batches, the resumed epoch 2 included
    ea, eb = ([json.loads(x) for x in (tmp_path / k / "metrics.jsonl").read_text().splitlines()] for k in ("whole", "killed"))
    assert [r["loss"] for r in eb] == pytest.approx([r["loss"] for r in ea], rel=1e-5) and len(eb) == 3
    wa, wb = (torch.load(tmp_path / k / "final.pt") for k in ("whole", "killed"))
    assert all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa)


def test_the_best_metric_survives_a_resume(tmp_path: Path) -> None:
    out = tmp_path / "run"
    fit(Toy(recipe(epochs=2), scores=[5.0, 3.0]), out, progress=False)
    assert json.loads((out / "best.json").read_text())["score"] == 5.0
    fit(Toy(recipe(epochs=3), scores=[5.0, 3.0, 4.0]), out, progress=False)  # resumes at epoch 3
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert rows[-1]["best"] is False and rows[-1]["best_score"] == 5.0
    assert json.loads((out / "best.json").read_text())["score"] == 5.0


def test_clipping_bounds_the_gradient(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from accelerate import Accelerator

    seen: list[tuple[float, float]] = []
    clip = Accelerator.clip_grad_norm_  # how it clips changes between Accelerate versions: spy on its API

    def spy(self: Accelerator, params: Any, max_norm: float, *a: Any, **kw: Any) -> torch.Tensor:
        params = list(params)
        before = clip(self, params, max_norm, *a, **kw)
        seen.append((float(before), float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params])))))
        return before

    monkeypatch.setattr(Accelerator, "clip_grad_norm_", spy)
    fit(Toy(recipe(epochs=1, grad_clip=0.5)), tmp_path / "c", progress=False)
    assert len(seen) == 16 and max(b for b, _ in seen) > 0.5  # the raw gradients were larger
    assert all(after <= 0.5 + 1e-5 for _, after in seen)  # and the optimiser saw them clipped
    assert [r["grad_norm"] for r in steps(tmp_path / "c")] == pytest.approx([b for b, _ in seen])


def test_bad_recipes_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="fp16 needs a GPU"):
        fit(Toy(recipe(mixed_precision="fp16")), tmp_path / "a", progress=False)

    class Frozen(Toy):
        def parameters(self, model: torch.nn.Module) -> list[torch.nn.Parameter]:
            return []

    with pytest.raises(ValueError, match="no trainable parameter"):
        fit(Frozen(recipe()), tmp_path / "b", progress=False)
    with pytest.raises(ValueError):
        Recipe(grad_accum=0)


@pytest.mark.heavy
def test_ray_train_with_two_workers_tracks_one_process(engine, tmp_path: Path) -> None:
    from ray import cloudpickle

    from fusionweave.trainers.core.ray_launch import ray_fit

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import a test module
    fit(Toy(recipe(lr=0.5), batch=32, dropout=0.0), tmp_path / "one", progress=False)
    ray_fit(2, cpus_per_worker=0.5)(Toy(recipe(lr=0.5), batch=32, dropout=0.0), tmp_path / "two")
    one, two = steps(tmp_path / "one"), steps(tmp_path / "two")
    assert len(one) == len(two) == 16
    # each worker takes half of each global batch and DDP averages the gradients: the same steps
    assert [r["loss"] for r in two] == pytest.approx([r["loss"] for r in one], rel=1e-4)
    assert two[-1]["loss"] < 0.2 * two[0]["loss"]
