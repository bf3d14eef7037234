"""EVE's training config and the Method the training core runs, one per stage.

Stages (EVEv1's recipe; AdamW, weight decay 0, cosine, warm-up 0.03, bf16 on GPU, 1 epoch each):
1. LLM-guided pre-aligning: captions; only the patch embedding, projector and PAL train (LLM
   frozen); lr 4e-4.
2. Generative pre-training: captions; everything trains; lr 4e-5.
3. Supervised fine-tuning: LLaVA-665K conversations (vicuna_v1); lr 2e-5. PAL weight 0 by
   default (design: the paper aligns patches while pre-training; set stage3.pal_weight to keep it).
Each stage starts from the previous stage's saved folder (`EveModel.from_pretrained`). The paper's
global batch (512, 512, 128) is batch_size x ranks x recipe.grad_accum: set those for your cluster.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field, model_validator

from fusionweave.pipelines.config_base import Strict
from fusionweave.trainers.chat_template import TemplateName
from fusionweave.trainers.core.method import Loader, Method, StepContext
from fusionweave.trainers.core.recipe import Recipe
from fusionweave.trainers.eve.config import ImageConfig, PalConfig, PelConfig
from fusionweave.trainers.eve.data import ConversationLoader, Encoder, loader_errors, shard_loader, to_device
from fusionweave.trainers.eve.model import CONFIG, LLM_DIR, EveModel, image_token_id

FINAL, REJECTS = "final", "rejects.json"


class JsonSource(Strict):
    path: Path = Field(description="LLaVA conversation JSON (array) or .jsonl")
    image_root: Path = Field(description="the rows' `image` paths are relative to this folder")


class DataConfig(Strict):
    shards: list[Path] = Field(default_factory=list, description="caption shard folders or tars (image + txt)")
    conversations: list[JsonSource] = Field(default_factory=list)
    batch_size: int = Field(8, gt=0, le=65536, description="samples per rank per batch")
    workers: int = Field(2, ge=0, le=256, description="DataLoader workers per rank")
    shuffle_buffer: int = Field(1000, ge=0, le=10_000_000, description="caption shards only")
    max_length: int = Field(2048, gt=8, le=1_048_576, description="tokens per sample, the image's included")

    @model_validator(mode="after")
    def _one_source(self) -> "DataConfig":
        if bool(self.shards) == bool(self.conversations):
            raise ValueError("give either shards or conversations for a stage")
        return self


def _recipe(lr: float) -> Recipe:
    return Recipe(lr=lr, weight_decay=0.0, optimizer="adamw", schedule="cosine", warmup_ratio=0.03,
                  mixed_precision="bf16")


class StageConfig(Strict):
    data: DataConfig | None = Field(None, description="None: the stage is skipped")
    template: TemplateName = "plain"
    train: Literal["aligner", "all"] = Field("all", description="aligner: PEL, projector and PAL only")
    pal_weight: float = Field(1.0, ge=0, le=100, description="loss = CE + pal_weight x PAL")
    recipe: Recipe = _recipe(4e-5)

    @model_validator(mode="before")
    @classmethod
    def _recipe_over_stage_defaults(cls, data: Any) -> Any:
        """A recipe given in part keeps the stage's paper values for the rest."""
        if isinstance(data, dict) and isinstance(data.get("recipe"), dict):
            base = cls.model_fields["recipe"].default.model_dump()
            data = {**data, "recipe": {**base, **data["recipe"]}}
        return data


class Stage1(StageConfig):
    train: Literal["aligner", "all"] = "aligner"
    recipe: Recipe = _recipe(4e-4)


class Stage2(StageConfig):
    pass


class Stage3(StageConfig):
    template: TemplateName = "vicuna_v1"
    pal_weight: float = Field(0.0, ge=0, le=100)
    recipe: Recipe = _recipe(2e-5)


class EveConfig(Strict):
    llm: Path = Field(description="local folder of a transformers causal LM and its tokenizer")
    teacher: Path = Field(description="local folder of a CLIP or SigLIP vision model (the PAL's target)")
    image: ImageConfig = ImageConfig()
    pel: PelConfig = PelConfig()
    pal: PalConfig = PalConfig()
    gradient_checkpointing: bool = False
    stage1: Stage1 = Stage1()
    stage2: Stage2 = Stage2()
    stage3: Stage3 = Stage3()

    def stage(self, n: int) -> StageConfig:
        if n not in (1, 2, 3):
            raise ValueError(f"EVE has stages 1, 2 and 3, not {n}")
        return getattr(self, f"stage{n}")


def on_device(recipe: Recipe) -> Recipe:
    """bf16 is the GPU recipe; a CPU run trains in float32."""
    cpu = recipe.device == "cpu" or (recipe.device == "auto" and not torch.cuda.is_available())
    return recipe.model_copy(update={"mixed_precision": "no"}) if cpu and recipe.mixed_precision != "no" else recipe


def _unwrap(model: torch.nn.Module) -> EveModel:
    while not isinstance(model, EveModel) and hasattr(model, "module"):
        model = model.module
    return model  # type: ignore[return-value]


class EveMethod(Method):
    name = "eve"

    def __init__(self, cfg: EveConfig, stage: int, init: Path | None = None):
        """`init`: the previous stage's saved folder; None builds on `cfg.llm` with a new PEL/PAL."""
        st = cfg.stage(stage)
        if st.data is None:
            raise ValueError(f"stage {stage} has no data")
        super().__init__(on_device(st.recipe))
        self.cfg, self.stage, self.st, self.init = cfg, stage, st, init
        self._model: EveModel | None = None
        self._loader: Loader | None = None

    def model(self) -> EveModel:
        st, cfg = self.st, self.cfg
        if self.init is None:
            m = EveModel.build(cfg.llm, cfg.teacher, cfg.image, cfg.pel, cfg.pal, st.template, st.pal_weight)
        else:
            m = EveModel.from_pretrained(self.init, cfg.teacher if st.pal_weight > 0 else None, st.pal_weight,
                                         st.template)
        m.requires_grad_(False)
        for p in self.parameters(m):
            p.requires_grad_(True)
        if cfg.gradient_checkpointing:
            m.llm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self._model = m.train()
        return m

    def parameters(self, model: torch.nn.Module) -> list[torch.nn.Parameter]:
        m = _unwrap(model)
        parts = [m.pel] + ([m.pal] if m.uses_pal() else []) + ([m.llm] if self.st.train == "all" else [])
        return [p for part in parts for p in part.parameters()]

    def tokenizer(self) -> tuple[Any, int]:
        if self._model is not None:
            return self._model.tokenizer, self._model.image_token_id
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(self.init / LLM_DIR if self.init else self.cfg.llm, local_files_only=True)
        return tok, image_token_id(tok)

    def loader(self, rank: int, world: int) -> Loader:
        tok, image_id = self.tokenizer()
        d = self.st.data
        assert d is not None
        enc = Encoder(tok, image_id, self.cfg.image, self.st.template, d.max_length)
        seed = self.recipe.seed
        if d.shards:
            self._loader = shard_loader(d.shards, enc, d.batch_size, rank, world, d.workers, seed, d.shuffle_buffer)
        else:
            self._loader = ConversationLoader.from_files([(s.path, s.image_root) for s in d.conversations], enc,
                                                         d.batch_size, rank=rank, world=world, workers=d.workers,
                                                         seed=seed)
        return self._loader

    def loss(self, model: torch.nn.Module, batch: Any, ctx: StepContext) -> tuple[torch.Tensor, dict[str, float]]:
        out = model(to_device(batch, ctx.device))
        return out["loss"], {"ce": float(out["ce"].detach()), "pal": float(out["pal"].detach())}

    def rejects(self) -> dict[str, int]:
        """This rank's rejected samples so far, by reason."""
        return loader_errors(self._loader) if self._loader is not None else {}

    def save_final(self, model: torch.nn.Module, out: Path) -> None:
        (Path(out) / REJECTS).write_text(json.dumps(self.rejects(), indent=1))
        _unwrap(model).save_pretrained(Path(out) / FINAL)


def finished(stage_dir: Path) -> bool:
    return (stage_dir / FINAL / CONFIG).is_file()
