"""The PathWeave model: frozen modality encoders -> the bridge (with every path's adapters) ->
soft prompt tokens in front of the question -> a frozen causal LM. `paths` maps a modality to the
adapter path it runs through (its own, "shared" for the sequential baseline, none for the image
the bridge was trained on); the modules of every path live in one model, so one checkpoint serves
every modality."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from fusionweave.trainers.pathweave.bridge import Bridge
from fusionweave.trainers.pathweave.config import BridgeConfig, ModelConfig
from fusionweave.trainers.pathweave.encoders import ModalityEncoder

FROZEN_SOURCES = ("llm.", "encoders.")  # loaded from their own folders, never saved with the run


def load_llm(name: str) -> tuple[nn.Module, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from fusionweave.experts.resolve import resolve_model

    path = resolve_model(name)
    llm = AutoModelForCausalLM.from_pretrained(path)
    llm.requires_grad_(False)
    return llm, AutoTokenizer.from_pretrained(path)


class PathWeaveModel(nn.Module):
    def __init__(self, llm: nn.Module, tokenizer: Any, encoders: dict[str, nn.Module], bridge: BridgeConfig):
        """`encoders`: modality -> a frozen module with `width` whose forward(batch, device) gives
        (features, mask); the first one's width is the bridge's (the image encoder's)."""
        super().__init__()
        self.llm, self.tokenizer = llm, tokenizer
        self.encoders = nn.ModuleDict(encoders)
        width = next(iter(encoders.values())).width
        # a modality whose encoder is narrower or wider gets a linear map, trained in its own stage
        self.input_maps = nn.ModuleDict({m: nn.Linear(e.width, width) for m, e in encoders.items()
                                         if e.width != width})
        b = bridge
        self.bridge = Bridge(width, self.llm.get_input_embeddings().embedding_dim, b.hidden, b.layers, b.heads,
                             b.intermediate, b.queries, b.cross_every)
        self.paths: dict[str, str] = {}

    @classmethod
    def from_config(cls, cfg: ModelConfig, modalities: list[str]) -> "PathWeaveModel":
        llm, tok = load_llm(cfg.llm)
        encoders = {m: ModalityEncoder(m, cfg.encoders[m].kind, cfg.encoders[m].model, cfg.encoders[m].revision)
                    for m in modalities}
        return cls(llm, tok, encoders, cfg.bridge)

    def train(self, mode: bool = True) -> "PathWeaveModel":
        super().train(mode)
        self.llm.eval()  # frozen: no dropout whatever mode the loop asks for
        return self

    def add_routes(self, routes: dict[str, list[str]], bottleneck: int, gated: bool) -> None:
        for _, lin in self.bridge.adapted():
            for path, experts in routes.items():
                lin.add_route(path, experts, bottleneck, gated)

    def prefix(self, modality: str, batch: dict[str, Any], device: torch.device) -> torch.Tensor:
        feats, mask = self.encoders[modality](batch, device)
        if modality in self.input_maps:
            feats = self.input_maps[modality](feats)
        path = self.paths.get(modality)
        for _, lin in self.bridge.adapted():
            lin.path = path
        return self.bridge(feats, mask)

    def forward(self, modality: str, batch: dict[str, Any], ids: torch.Tensor, labels: torch.Tensor,
                attention: torch.Tensor) -> torch.Tensor:
        """The LM loss of the answers given the modality's soft prompt and the question."""
        p = self.prefix(modality, batch, ids.device)
        emb = torch.cat([p, self.llm.get_input_embeddings()(ids)], 1)
        ones = torch.ones(p.shape[:2], dtype=attention.dtype, device=ids.device)
        ignore = torch.full(p.shape[:2], -100, dtype=labels.dtype, device=ids.device)
        out = self.llm(inputs_embeds=emb, attention_mask=torch.cat([ones, attention], 1),
                       labels=torch.cat([ignore, labels], 1))
        return out.loss

    @torch.no_grad()
    def generate(self, modality: str, batch: dict[str, Any], prompts: list[list[int]], device: torch.device,
                 **decode: Any) -> list[str]:
        """Decoded answers; each sequence left-padded as [pad][soft prompt][question]."""
        p = self.prefix(modality, batch, device)
        table = self.llm.get_input_embeddings()
        seqs = [torch.cat([p[i], table(torch.tensor(ids, device=device))]) for i, ids in enumerate(prompts)]
        n = max(len(s) for s in seqs)
        emb = torch.zeros(len(seqs), n, p.shape[-1], device=device, dtype=p.dtype)
        mask = torch.zeros(len(seqs), n, dtype=torch.long, device=device)
        for i, s in enumerate(seqs):
            emb[i, n - len(s):], mask[i, n - len(s):] = s, 1
        tok = self.tokenizer
        out = self.llm.generate(inputs_embeds=emb, attention_mask=mask, do_sample=False,
                                eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, **decode)
        return [t.strip() for t in tok.batch_decode(out, skip_special_tokens=True)]

    def run_state(self) -> dict[str, torch.Tensor]:
        """What a stage saves: everything but the frozen LLM and encoders."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith(FROZEN_SOURCES)}
