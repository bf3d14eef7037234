"""One PathWeave stage as a training-core method: the model with every path up to this stage,
the previous stage's weights loaded, only this stage's parameters trainable, the stage's mixture
cut to its step count, and the evaluation of every modality seen so far at the stage's end."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from fusionweave.trainers.core.method import Loader, Method, StepContext
from fusionweave.trainers.mcl_stages import Stage, eval_sets, stage_mixture
from fusionweave.trainers.pathweave.config import PathWeaveConfig
from fusionweave.trainers.pathweave.data import Prompter, StageLoader
from fusionweave.trainers.pathweave.evaluate import evaluate_seen
from fusionweave.trainers.pathweave.model import PathWeaveModel
from fusionweave.trainers.pathweave.plan import StagePlan, routing, trainable_parts
from fusionweave.trainers.stream import Mixture

FINAL, WEIGHTS, TRAINABLE, EVAL = "final", "weights.pt", "trainable.json", "eval.json"


def finished(folder: Path) -> bool:
    return (folder / FINAL / WEIGHTS).is_file() and (folder / EVAL).is_file()


def gates_uniform(model: PathWeaveModel, path: str) -> bool | None:
    """Whether every gate of `path` gives each expert the same weight on a probe input (eval mode);
    None when the path has no gate."""
    gates = [lin.gates[path] for _, lin in model.bridge.adapted() if path in lin.gates]
    if not gates:
        return None
    probe = torch.Generator().manual_seed(0)  # the training RNG stays untouched
    for gate in gates:
        w = gate.eval()(torch.randn(3, gate.w_gate.in_features, generator=probe))
        gate.train()
        if not torch.allclose(w, torch.full_like(w, 1.0 / w.shape[-1])):
            return False
    return True


class PathWeaveStage(Method):
    name = "pathweave"

    def __init__(self, cfg: PathWeaveConfig, stages: list[Stage], plans: list[StagePlan], index: int,
                 init: Path | None):
        recipe = cfg.recipe.model_copy(update={"epochs": 1, "seed": cfg.seed,
                                               **({"lr": cfg.model.image_lr} if index == 0 and cfg.model.image_lr
                                                  else {})})
        super().__init__(recipe)
        self.cfg, self.stages, self.plans, self.index, self.init = cfg, stages, plans, index, init
        self.plan = plans[index]
        self.seen = [m for p in plans[:index + 1] for m in p.modalities]
        self.prompter: Prompter | None = None
        self.info: dict[str, Any] = {}

    def model(self) -> torch.nn.Module:
        model = PathWeaveModel.from_config(self.cfg.model, self.seen)
        r = routing(self.cfg.method.baseline, self.plans, self.index)
        model.add_routes(r.routes, self.cfg.model.bottleneck, r.gated)
        model.paths = dict(r.paths)
        if self.init is not None:
            saved = torch.load(self.init / WEIGHTS, weights_only=True)
            missing, unexpected = model.load_state_dict(saved, strict=False)
            if unexpected:
                raise RuntimeError(f"{self.init}: weights the stage's model does not have: {unexpected[:5]}")
        parts = trainable_parts(self.cfg.method.baseline, self.plans, self.index)
        for n, p in model.named_parameters():
            p.requires_grad_(n.startswith(("bridge.", "input_maps.")) if parts is None
                             else any(s in n for s in parts))
        total = sum(p.numel() for p in model.parameters())
        names = [n for n, p in model.named_parameters() if p.requires_grad]
        trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
        self.info = {"stage": self.index, "label": self.plan.label, "trainable": names, "trainable_params": trained,
                     "total_params": total, "trainable_share": trained / total,
                     "gates_uniform_at_start": gates_uniform(model, self.plan.label),
                     "routes": r.routes, "paths": r.paths}
        self.prompter = Prompter(model.tokenizer, self.cfg.eval, self.cfg.method.max_length)
        return model

    def prepare(self, out: Path) -> None:
        self.out = Path(out)

    def loader(self, rank: int, world: int) -> Loader:
        build, bs = self.cfg.build, self.cfg.method.batch_size
        seed = self.cfg.seed + self.index
        if len(self.plan.train) == 1:
            mix = stage_mixture(build, self.plan.train[0], bs, seed=seed, rank=rank, world_size=world)
        else:  # joint: each modality weighs the same, its sources by their own ratios
            parts = [stage_mixture(build, s, bs, seed=seed, rank=rank, world_size=world) for s in self.plan.train]
            mix = Mixture([ld for m in parts for ld in m.loaders],
                          [w / len(parts) for m in parts for w in m.weights], seed=seed)
        for ld in mix.loaders:
            # a DataLoader draws its base seed from the global RNG at each new epoch iterator, and a
            # resumed run makes iterators at other steps: a private generator keeps the gate noise's
            # random stream the same as an uninterrupted run's
            ld.loader_kwargs["generator"] = torch.Generator().manual_seed(seed)
        return StageLoader(mix, self.plan.steps)

    def loss(self, model: torch.nn.Module, batch: Any, ctx: StepContext) -> tuple[torch.Tensor, dict[str, float]]:
        _, b = batch
        recs = b["json"]
        assert self.prompter is not None  # model() made it
        ids, labels, attn = (t.to(ctx.device) for t in self.prompter.train_batch(recs, ctx.step))
        return model(recs[0]["modality"], b, ids, labels, attn), {}

    def evaluate(self, model: torch.nn.Module, ctx: StepContext) -> dict[str, float]:
        sets = eval_sets(self.cfg.build, self.stages, max(s.index for s in self.plan.train))
        res = evaluate_seen(model, self.prompter, self.cfg.build, sets, self.cfg.eval, ctx.device)
        res["trainable_share"] = self.info["trainable_share"]
        (self.out / EVAL).write_text(json.dumps(res, indent=1))
        return {f"score/{m}": round(v, 4) for m, v in res["modalities"].items()}

    def save_final(self, model: torch.nn.Module, out: Path) -> None:
        folder = Path(out) / FINAL
        folder.mkdir(parents=True, exist_ok=True)
        torch.save(model.run_state(), folder / WEIGHTS)  # type: ignore[operator]
        (Path(out) / TRAINABLE).write_text(json.dumps(self.info, indent=1))
