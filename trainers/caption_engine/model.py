"""The pivot model for SFT: loaded from its folder, the vision tower frozen, projector and LLM
trainable (fully, or the LLM through PEFT LoRA with the projector saved alongside), and saved as
a folder the densefusion `transformers` captioner loads as it is."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch

from fusionweave.experts.engine_folder import ENGINE_INFO, weights_sha256
from fusionweave.experts.resolve import resolve_model
from fusionweave.trainers.caption_engine.config import EngineConfig, EngineSetupError
from fusionweave.trainers.chat_template import IMAGE, ROLES, SEP, SEP2, SYSTEM

# the parts of a LLaVA-family model (transformers 5 names, then the older top-level ones)
VISION = ("model.vision_tower", "vision_tower")
PROJECTOR = ("model.multi_modal_projector", "multi_modal_projector")
EXTRA_PROJECTOR = ("model.image_newline", "image_newline")  # LLaVA-NeXT's learned row separator
LLM = ("model.language_model", "language_model")
HEAD = ("lm_head",)

# the processor's chat template, so inference builds exactly the vicuna_v1 prompt the engine was
# trained on: "SYSTEM USER: <image>\nPROMPT ASSISTANT:" (trainers/chat_template.prompt_for_generation)
VICUNA_JINJA = (SYSTEM + SEP + "{% for m in messages %}{% if m['role'] == 'user' %}" + ROLES["human"] + ": "
                "{% for c in m['content'] %}{% if c['type'] == 'image' %}" + IMAGE + "\n{% else %}{{ c['text'] }}"
                "{% endif %}{% endfor %}" + SEP + "{% else %}" + ROLES["gpt"] + ": "
                "{% for c in m['content'] %}{{ c['text'] }}{% endfor %}" + SEP2 + "{% endif %}{% endfor %}"
                "{% if add_generation_prompt %}" + ROLES["gpt"] + ":{% endif %}")


def part(model: torch.nn.Module, names: tuple[str, ...]) -> tuple[str, Any] | None:
    """(name, module or parameter) of the first of `names` the model has."""
    for n in names:
        try:
            return n, model.get_submodule(n)
        except AttributeError:
            try:
                return n, model.get_parameter(n)
            except AttributeError:
                continue
    return None


def _require(model: torch.nn.Module, names: tuple[str, ...], what: str) -> tuple[str, Any]:
    got = part(model, names)
    if got is None:
        raise EngineSetupError(f"the pivot model ({type(model).__name__}) has no {what} ({' / '.join(names)}); "
                         "caption-engine trains LLaVA-family image-text-to-text models")
    return got


def _params(x: Any) -> list[torch.nn.Parameter]:
    return [x] if isinstance(x, torch.nn.Parameter) else list(x.parameters())


def load_processor(cfg: EngineConfig) -> Any:
    from transformers import AutoProcessor

    proc = AutoProcessor.from_pretrained(resolve_model(cfg.model, cfg.revision), local_files_only=True,
                                         trust_remote_code=cfg.trust_remote_code)
    tok = proc.tokenizer
    # vicuna_v1 supervises the literal "</s>": it must be the tokenizer's EOS, or the engine never stops
    if tok.eos_token_id is None or list(tok(SEP2, add_special_tokens=False)["input_ids"]) != [tok.eos_token_id]:
        raise EngineSetupError(f"{cfg.model}: the vicuna_v1 template ends answers with {SEP2!r}, which this tokenizer does "
                         f"not encode as its EOS ({tok.eos_token!r}); use a Vicuna/Llama-2-style pivot")
    if tok.pad_token_id is None:
        tok.pad_token = tok.unk_token or tok.eos_token
    return proc


def image_token_id(model: torch.nn.Module) -> int:
    c = model.config
    tid = getattr(c, "image_token_id", None)
    return int(tid if tid is not None else c.image_token_index)


def build(cfg: EngineConfig) -> torch.nn.Module:
    from transformers import AutoModelForImageTextToText

    path = resolve_model(cfg.model, cfg.revision)
    model = AutoModelForImageTextToText.from_pretrained(path, local_files_only=True, dtype=torch.float32,
                                                        trust_remote_code=cfg.trust_remote_code)
    model.requires_grad_(False)
    vision = _require(model, VISION, "vision tower")[1]
    projector = [_require(model, PROJECTOR, "multi-modal projector")[1]]
    extra = part(model, EXTRA_PROJECTOR)
    projector += [extra[1]] if extra else []
    llm = [_require(model, LLM, "language model")[1], _require(model, HEAD, "LM head")[1]]
    trainable = ([*projector] if cfg.train_projector else []) + ([] if cfg.freeze_vision else [vision])
    if cfg.train_llm and not cfg.lora.enabled:
        trainable += llm
    for m in trainable:
        for p in _params(m):
            p.requires_grad_(True)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    if cfg.lora.enabled:
        model = with_lora(model, cfg)
    return model


def with_lora(model: torch.nn.Module, cfg: EngineConfig) -> torch.nn.Module:
    from peft import LoraConfig, get_peft_model

    llm = _require(model, LLM, "language model")[0]
    names = "|".join(re.escape(t) for t in cfg.lora.target_modules)
    # a regex, so LoRA lands in the LLM only (CLIP's attention has q_proj/k_proj/v_proj too)
    target = rf"^{re.escape(llm)}\..*\.({names})$"
    found = [n for n, _ in model.named_modules() if re.match(target, n)]
    if not found:
        raise EngineSetupError(f"lora.target_modules {cfg.lora.target_modules} match no layer of the language model")
    save = [n for n in (PROJECTOR[0], PROJECTOR[1]) if part(model, (n,))][:1] if cfg.train_projector else []
    lcfg = LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout, target_modules=target,
                      modules_to_save=save or None, task_type=None)
    trainable_extra = [p for n, p in model.named_parameters() if p.requires_grad]
    peft = get_peft_model(model, lcfg)
    for p in trainable_extra:  # vision tower when unfrozen, LLaVA-NeXT's image_newline
        p.requires_grad_(True)
    return peft


def share_trained(model: torch.nn.Module) -> dict[str, float]:
    total = sum(p.numel() for p in model.parameters())
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"params": total, "trained_params": trained, "trained_share": trained / max(1, total)}


def save_engine(model: torch.nn.Module, processor: Any, folder: Path, cfg: EngineConfig,
                record: dict[str, Any]) -> dict[str, Any]:
    """Write the engine folder; returns its engine.json record (with the weights' sha256)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    adapter = cfg.lora.enabled and cfg.lora.save == "adapter"
    if cfg.lora.enabled and not adapter:
        model = model.merge_and_unload()
    if adapter:
        model.peft_config["default"].base_model_name_or_path = str(resolve_model(cfg.model, cfg.revision))
    model.save_pretrained(folder)
    gen = getattr(model, "generation_config", None)
    tok = processor.tokenizer
    if gen is not None and not adapter:
        gen.eos_token_id, gen.pad_token_id = tok.eos_token_id, tok.pad_token_id
        gen.save_pretrained(folder)
    processor.chat_template = VICUNA_JINJA
    processor.save_pretrained(folder)
    info = {"trained_by": "fusionweave train caption-engine", "base": str(cfg.model),
            "format": "adapter" if adapter else "merged", "lora": cfg.lora.model_dump() if cfg.lora.enabled else None,
            "template": "vicuna_v1", **record, "checkpoint": weights_sha256(folder)[:16]}
    (folder / ENGINE_INFO).write_text(json.dumps(info, indent=1, default=str))
    return info
