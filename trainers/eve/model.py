"""The EVE model: a transformers causal LM that reads image tokens made by the patch embedding
layer in place of its one `<image>` token, with the patch aligning layer and a frozen vision
teacher while training.

A batch (trainers/eve/data.py) is {input_ids: [LongTensor], labels: [LongTensor], pixels: (B, 3,
H, W), grids: (B, 2), keys: [str]}; sequences become as long as their image makes them, so they
are spliced and right-padded here. A saved folder holds `llm/` (the LLM and tokenizer, by their
save_pretrained), `eve.safetensors` (PEL, projector and PAL weights) and `eve_config.json`; the
teacher is never saved (it is frozen and named by the training config).
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fusionweave.trainers.chat_template import IGNORE, IMAGE, encode_text, prompt_for_generation
from fusionweave.trainers.eve.config import EveArch, ImageConfig, PalConfig, PelConfig
from fusionweave.trainers.eve.image import pad_batch, preprocess
from fusionweave.trainers.eve.pal import PatchAligner, Teacher, aligned_layers, cosine_loss
from fusionweave.trainers.eve.pel import PatchEmbedding, patch_positions

CONFIG, WEIGHTS, LLM_DIR = "eve_config.json", "eve.safetensors", "llm"


def load_llm(path: str | Path, dtype: torch.dtype = torch.float32) -> tuple[Any, Any]:
    """A causal LM and its tokenizer from a local folder (never downloaded, no remote code)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"LLM {path}: no config.json; give a local folder written by save_pretrained "
                                "(models are never downloaded)")
    llm = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, trust_remote_code=False, local_files_only=True)
    tok = AutoTokenizer.from_pretrained(path, trust_remote_code=False, local_files_only=True)
    return llm, tok


def image_token_id(tokenizer: Any) -> int:
    """The id of `<image>`, added to the tokenizer as a special token when it lacks one. It is never
    looked up in the LLM's embeddings (image tokens replace it), so no resize is needed."""
    if IMAGE not in tokenizer.get_vocab():
        tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE]})
    return int(tokenizer.convert_tokens_to_ids(IMAGE))


class EveModel(nn.Module):
    def __init__(self, llm: Any, tokenizer: Any, arch: EveArch, teacher: Teacher | None = None,
                 pal_weight: float = 1.0):
        super().__init__()
        self.llm, self.tokenizer, self.arch, self.pal_weight = llm, tokenizer, arch, pal_weight
        self.image_token_id = image_token_id(tokenizer)
        width = llm.get_input_embeddings().embedding_dim
        self.pel = PatchEmbedding(arch.image.patch, arch.pel.width, arch.pel.heads, width)
        self.pal_layers = aligned_layers(llm.config.num_hidden_layers, arch.pal.every, arch.pal.layers)
        self.pal = PatchAligner(width, arch.teacher_width, arch.pal.layers, arch.pal.heads)
        if teacher is not None and teacher.width != arch.teacher_width:
            raise ValueError(f"teacher width {teacher.width} differs from the PAL's {arch.teacher_width}")
        # outside the module tree: not in state_dict(), parameters() or DDP; moved along in _apply
        object.__setattr__(self, "teacher", teacher)

    def _apply(self, fn: Any, *args: Any, **kwargs: Any) -> "EveModel":
        super()._apply(fn, *args, **kwargs)
        if self.teacher is not None:
            self.teacher._apply(fn, *args, **kwargs)
        return self

    @classmethod
    def build(cls, llm: str | Path, teacher: str | Path, image: ImageConfig = ImageConfig(),
              pel: PelConfig = PelConfig(), pal: PalConfig = PalConfig(), template: str = "plain",
              pal_weight: float = 1.0, dtype: torch.dtype = torch.float32) -> "EveModel":
        """A new EVE on a pretrained LLM: PEL, projector and PAL start random."""
        lm, tok = load_llm(llm, dtype)
        t = Teacher(teacher, image.mean, image.std)  # read even at pal_weight 0: its width sizes the PAL
        arch = EveArch(image=image, pel=pel, pal=pal, teacher_width=t.width, template=template)
        return cls(lm, tok, arch, t if pal_weight > 0 else None, pal_weight).to(dtype)

    @classmethod
    def from_pretrained(cls, folder: str | Path, teacher: str | Path | None = None, pal_weight: float = 1.0,
                        template: str | None = None, dtype: torch.dtype = torch.float32) -> "EveModel":
        """A saved EVE; with `teacher`, ready to train on with the PAL loss. `template` overrides the
        saved one (a stage that trains on another template)."""
        from safetensors.torch import load_file

        folder = Path(folder)
        if not (folder / CONFIG).is_file():
            raise FileNotFoundError(f"{folder}: no {CONFIG}; not a saved EVE model folder")
        arch = EveArch.model_validate_json((folder / CONFIG).read_text())
        if template is not None:
            arch = arch.model_copy(update={"template": template})
        lm, tok = load_llm(folder / LLM_DIR, dtype)
        t = Teacher(teacher, arch.image.mean, arch.image.std) if teacher is not None else None
        model = cls(lm, tok, arch, t, pal_weight)
        own = load_file(folder / WEIGHTS)
        missing, unexpected = nn.ModuleDict({"pel": model.pel, "pal": model.pal}).load_state_dict(own, strict=False)
        if missing or unexpected:
            raise ValueError(f"{folder / WEIGHTS}: missing {missing[:5]}, unexpected {unexpected[:5]}")
        return model.to(dtype)

    def save_pretrained(self, folder: str | Path) -> Path:
        """Written next to `folder` and renamed into place: a folder that exists is complete."""
        from safetensors.torch import save_file

        folder = Path(folder)
        tmp = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        self.llm.save_pretrained(tmp / LLM_DIR)
        self.tokenizer.save_pretrained(tmp / LLM_DIR)
        own = {f"{name}.{k}": v.detach().contiguous().cpu() for name, mod in (("pel", self.pel), ("pal", self.pal))
               for k, v in mod.state_dict().items()}
        save_file(own, tmp / WEIGHTS)
        (tmp / CONFIG).write_text(self.arch.model_dump_json(indent=1))
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
        return folder

    def splice(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """inputs_embeds (B, T, D), attention_mask (B, T), labels (B, T) with each sample's image
        tokens in place of its `<image>`, right-padded; and each image's patch positions."""
        ids_list, labels_list, keys = batch["input_ids"], batch["labels"], batch.get("keys")
        embed = self.llm.get_input_embeddings()
        images = self.pel(batch["pixels"].to(embed.weight.dtype), batch["grids"])
        spots = []
        for i, ids in enumerate(ids_list):
            at = (ids == self.image_token_id).nonzero().flatten()
            if len(at) != 1:
                name = keys[i] if keys else f"#{i}"
                raise ValueError(f"sample {name}: {len(at)} <image> tokens; EVE takes exactly one image per sample")
            spots.append(int(at[0]))
        flat = torch.cat(ids_list)
        text = embed(torch.where(flat == self.image_token_id, 0, flat)).split([len(x) for x in ids_list])
        seqs, labs, where = [], [], []
        for i, (t, lab, img, p) in enumerate(zip(text, labels_list, images, spots)):
            seqs.append(torch.cat([t[:p], img.to(t.dtype), t[p + 1:]]))
            labs.append(torch.cat([lab[:p], lab.new_full((len(img),), IGNORE), lab[p + 1:]]))
            where.append(p + patch_positions(tuple(batch["grids"][i].tolist())).to(flat.device))
        n = max(len(s) for s in seqs)
        embeds = seqs[0].new_zeros(len(seqs), n, seqs[0].shape[-1])
        mask = torch.zeros(len(seqs), n, dtype=torch.long, device=flat.device)
        labels = torch.full((len(seqs), n), IGNORE, dtype=torch.long, device=flat.device)
        for i, (s, lab) in enumerate(zip(seqs, labs)):
            embeds[i, :len(s)], mask[i, :len(s)], labels[i, :len(s)] = s, 1, lab
        return embeds, mask, labels, where

    def uses_pal(self) -> bool:
        return self.teacher is not None and self.pal_weight > 0

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """{loss: ce + pal_weight * pal, ce, pal} (pal is 0 without a teacher or with weight 0)."""
        embeds, mask, labels, where = self.splice(batch)
        out = self.llm(inputs_embeds=embeds, attention_mask=mask, labels=labels, output_hidden_states=self.uses_pal(),
                       use_cache=False)
        ce = out.loss
        pal = ce.new_zeros(())
        if self.uses_pal():
            rows = torch.cat([torch.full_like(w, i) for i, w in enumerate(where)])
            cols = torch.cat(where)
            states = [out.hidden_states[k][rows, cols] for k in self.pal_layers]
            target = torch.cat(self.teacher(batch["pixels"], batch["grids"], self.arch.image.patch))
            pal = cosine_loss(self.pal(states), target.to(states[0].device))
        return {"loss": ce + self.pal_weight * pal, "ce": ce, "pal": pal}

    @torch.no_grad()
    def generate(self, image: Any, prompt: str = "", max_new_tokens: int = 32) -> str:
        """Greedy decoding for one image (PIL, HWC array or CHW uint8 tensor) and question."""
        im = preprocess(image, self.arch.image.max_side, self.arch.image.patch, self.arch.image.mean,
                        self.arch.image.std)
        pixels, grids = pad_batch([im])
        device = self.llm.get_input_embeddings().weight.device
        ids = torch.tensor(encode_text(prompt_for_generation(prompt, self.arch.template), self.tokenizer,
                                       self.arch.add_bos), device=device)
        batch = {"input_ids": [ids], "labels": [torch.full_like(ids, IGNORE)], "pixels": pixels.to(device),
                 "grids": grids.to(device), "keys": ["generate"]}
        embeds, mask, _, _ = self.splice(batch)
        eos = self.tokenizer.eos_token_id
        out = self.llm.generate(inputs_embeds=embeds, attention_mask=mask, max_new_tokens=max_new_tokens,
                                do_sample=False, eos_token_id=eos,
                                pad_token_id=self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None
                                else eos)
        return self.tokenizer.decode(out[0], skip_special_tokens=True).strip()

