"""`fit(method, out)`: the one training loop, on Hugging Face Accelerate.

One code path for CPU, one GPU, and DDP/FSDP/DeepSpeed under `accelerate launch`, `torchrun` or
Ray Train: Accelerate decides from the environment. The loop adds what every method needs:
- gradient accumulation done here, not by `Accelerator.accumulate`: our loaders are resumable
  shard streams, not prepared DataLoaders, so the epoch's last short group is known only here;
- the schedule is stepped once per optimiser step, whatever the number of processes;
- a checkpoint (`OUT/state`: model, optimiser, scaler, every process's RNG, plus `progress.json`
  with the loader position, step, epoch and the best metric) written at optimiser-step
  boundaries, atomically; rerunning the same command resumes at the next batch;
- `steps.jsonl` (one line per `log_every` optimiser steps) and `metrics.jsonl` (one line per
  epoch, with the method's evaluation); lines past the checkpoint are dropped on resume, so a
  killed run's log reads as if it never stopped.
"""
from __future__ import annotations

import json
import logging
import math
import shutil
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from fusionweave.trainers.core.method import Method, StepContext
from fusionweave.trainers.core.recipe import Recipe

STATE, PROGRESS = "state", "progress.json"


def accelerator(recipe: Recipe) -> Any:
    from accelerate import Accelerator

    cpu = recipe.device == "cpu" or (recipe.device == "auto" and not torch.cuda.is_available())
    # mixed precision needs a GPU autocast; on CPU fp16 has no scaler, so it is refused there
    if cpu and recipe.mixed_precision == "fp16":
        raise ValueError("mixed_precision fp16 needs a GPU; use bf16 or no on CPU")
    return Accelerator(cpu=cpu, mixed_precision=recipe.mixed_precision)


def optimizer(recipe: Recipe, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    if not params:
        raise ValueError("the method has no trainable parameter")
    cls = torch.optim.AdamW if recipe.optimizer == "adamw" else torch.optim.Adam
    return cls(params, lr=recipe.lr, betas=recipe.betas, weight_decay=recipe.weight_decay)


class Progress:
    """Where the run is: restored from `OUT/state/progress.json` on resume."""

    def __init__(self) -> None:
        self.epoch, self.step, self.best = 0, 0, None
        self.loader: dict[str, Any] = {}
        # the epoch's loss so far over every process (sum, batches), so that an epoch resumed
        # mid-way reports the mean of all its batches, not only of those after the restart
        self.epoch_loss: tuple[float, int] = (0.0, 0)

    def to_json(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "step": self.step, "best": self.best, "loader": self.loader,
                "epoch_loss": list(self.epoch_loss)}

    def load(self, data: dict[str, Any]) -> None:
        self.epoch, self.step, self.best, self.loader = data["epoch"], data["step"], data["best"], data["loader"]
        self.epoch_loss = tuple(data.get("epoch_loss", (0.0, 0)))  # type: ignore[assignment]


def _trim_log(path: Path, step: int) -> None:
    """Drop the lines a killed run wrote after its last checkpoint."""
    if path.exists():
        rows = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln)["step"] <= step]
        path.write_text("".join(r + "\n" for r in rows))


def _state_dir(out: Path) -> Path | None:
    """The last complete checkpoint (a kill during the swap leaves it as `state.old`)."""
    for name in (STATE, STATE + ".old"):
        if (out / name / PROGRESS).exists():
            return out / name
    return None


def save(acc: Any, out: Path, progress: Progress) -> None:
    tmp = out / (STATE + ".tmp")
    if acc.is_main_process and tmp.exists():
        shutil.rmtree(tmp)
    acc.wait_for_everyone()
    acc.save_state(str(tmp))
    acc.wait_for_everyone()
    if acc.is_main_process:
        (tmp / PROGRESS).write_text(json.dumps(progress.to_json()))
        old, cur = out / (STATE + ".old"), out / STATE
        if cur.exists():
            cur.rename(old)
        tmp.rename(cur)
        shutil.rmtree(old, ignore_errors=True)
    acc.wait_for_everyone()


def _total(acc: Any, total: float, count: int) -> tuple[float, int]:
    """A (sum, count) summed over every process (one collective)."""
    t = torch.tensor([total, count], dtype=torch.float64, device=acc.device)
    t = acc.reduce(t, reduction="sum") if acc.num_processes > 1 else t
    return float(t[0]), int(t[1])


def _mean(acc: Any, values: list[float]) -> float:
    """The mean over every process's values."""
    total, count = _total(acc, sum(values), len(values))
    return total / count if count else float("nan")


def fit(method: Method, out: Path, progress: bool = True) -> dict[str, Any]:
    from accelerate.utils import set_seed

    r = method.recipe
    logging.getLogger("accelerate").setLevel(logging.WARNING)  # one INFO line per saved file otherwise
    acc = accelerator(r)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    set_seed(r.seed)
    with acc.main_process_first():
        method.prepare(out)
    model = method.model()
    loader = method.loader(acc.process_index, acc.num_processes)
    params = method.parameters(model)
    opt = optimizer(r, params)
    steps_per_epoch = math.ceil(len(loader) / r.grad_accum)
    total = steps_per_epoch * r.epochs
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: r.lr_factor(s, steps_per_epoch, total))
    model, opt = acc.prepare(model, opt)
    acc.register_for_checkpointing(sched)
    state = Progress()
    found = _state_dir(out)
    if found is not None:
        acc.load_state(str(found))
        state.load(json.loads((found / PROGRESS).read_text()))
        loader.load_state_dict(state.loader)
    steps_log, epochs_log = out / "steps.jsonl", out / "metrics.jsonl"
    if acc.is_main_process:
        _trim_log(steps_log, state.step)
        _trim_log(epochs_log, state.step)
    result: dict[str, Any] = {}
    while state.epoch < r.epochs:
        result = _epoch(method, acc, model, opt, sched, loader, state, out, progress and acc.is_main_process)
    acc.wait_for_everyone()
    if acc.is_main_process:
        method.save_final(acc.unwrap_model(model), out)
    acc.wait_for_everyone()
    return result


def _epoch(method: Method, acc: Any, model: torch.nn.Module, opt: Any, sched: Any, loader: Any,
           state: Progress, out: Path, show: bool) -> dict[str, Any]:
    r = method.recipe
    model.train()
    t0 = time.perf_counter()
    n = len(loader)
    done = int(loader.state_dict().get("batches", 0))
    group: list[float] = []
    # this process's share of the epoch's loss; a resumed epoch's earlier batches count once, on rank 0
    loss_sum, loss_n = state.epoch_loss if acc.is_main_process else (0.0, 0)
    logs: dict[str, list[float]] = {}
    bar = tqdm(total=n, initial=done, disable=not show, desc=f"{method.name} epoch {state.epoch}", leave=False)
    for batch in loader:
        done += 1
        # the group this batch closes: grad_accum batches, or what the epoch has left
        first = (done - 1) // r.grad_accum * r.grad_accum
        size = min(r.grad_accum, n - first)
        sync = done == first + size
        ctx = StepContext(state.epoch, state.step, acc.device, acc.process_index, acc.num_processes)
        with acc.no_sync(model) if not sync and acc.num_processes > 1 else nullcontext():
            loss, extra = method.loss(model, batch, ctx)
            acc.backward(loss / size)
        group.append(float(loss.detach()))
        for k, v in extra.items():
            logs.setdefault(k, []).append(float(v))
        bar.update(1)
        if not sync:
            continue
        # the prepared model's parameters (frozen ones have no gradient and are skipped): Accelerate
        # takes its FSDP clipping path only for the wrapped model's own parameters
        norm = acc.clip_grad_norm_(model.parameters(), r.grad_clip) if r.grad_clip is not None else None
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        method.after_step(acc.unwrap_model(model))
        state.step += 1
        loss_sum, loss_n = loss_sum + sum(group), loss_n + len(group)
        bar.set_postfix(loss=f"{sum(group) / len(group):.4f}")
        if state.step % r.log_every == 0:
            row = {"step": state.step, "epoch": state.epoch, "loss": _mean(acc, group), "lr": sched.get_last_lr()[0],
                   **({"grad_norm": float(norm)} if norm is not None else {}),
                   **{k: _mean(acc, v) for k, v in logs.items()}}
            if acc.is_main_process:
                with (out / "steps.jsonl").open("a") as f:
                    f.write(json.dumps(row) + "\n")
            logs = {}
        group = []
        if r.save_every and state.step % r.save_every == 0 and done < n:
            state.loader = loader.state_dict()
            state.epoch_loss = _total(acc, loss_sum, loss_n)
            save(acc, out, state)
    bar.close()
    state.epoch += 1
    metrics: dict[str, float] = {}
    if acc.is_main_process:
        metrics = method.evaluate(acc.unwrap_model(model), StepContext(state.epoch, state.step, acc.device, 0, 1))
        model.train()
    best = False
    if method.metric is not None and acc.is_main_process:
        value = metrics[method.metric]
        best = state.best is None or value > state.best
        if best:
            state.best = value
            method.save_best(acc.unwrap_model(model), out, metrics)
    total, count = _total(acc, loss_sum, loss_n)
    state.epoch_loss = (0.0, 0)
    result = {"epoch": state.epoch, "step": state.step, "loss": total / count if count else float("nan"),
              "seconds": round(time.perf_counter() - t0, 2), **metrics}
    if method.metric is not None:
        result.update(best=best, **{f"best_{method.metric}": state.best})
    if acc.is_main_process:
        with (out / "metrics.jsonl").open("a") as f:
            f.write(json.dumps(result) + "\n")
    state.best = _broadcast(acc, state.best)
    state.loader = loader.state_dict()
    save(acc, out, state)
    return result


def _broadcast(acc: Any, value: Any) -> Any:
    if acc.num_processes == 1:
        return value
    from accelerate.utils import broadcast_object_list

    return broadcast_object_list([value])[0]

