"""A caption-engine folder as `fusionweave train caption-engine` writes it, read by the
transformers captioner: merged weights (a plain model folder) or a PEFT LoRA adapter over a base
model (`adapter_config.json` names the base), with the processor, and `engine.json` saying which
checkpoint it is (its weights' sha256, the run, the step and the data it was trained on)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

ADAPTER_CONFIG, ENGINE_INFO = "adapter_config.json", "engine.json"
WEIGHT_SUFFIXES = (".safetensors", ".bin")


def adapter_base(folder: Path) -> str | None:
    """The base model an adapter folder applies to; None for a plain model folder."""
    cfg = Path(folder) / ADAPTER_CONFIG
    if not cfg.is_file():
        return None
    try:
        base = json.loads(cfg.read_text()).get("base_model_name_or_path")
    except ValueError:
        base = None
    if not base:
        raise ValueError(f"{cfg} names no base_model_name_or_path; the adapter cannot be applied")
    return str(base)


def weights_sha256(folder: Path) -> str:
    """One hash over the folder's weight files (names and bytes): the checkpoint's identity."""
    h = hashlib.sha256()
    files = sorted(p for p in Path(folder).iterdir() if p.suffix in WEIGHT_SUFFIXES and p.is_file())
    for p in files:
        h.update(p.name.encode())
        with p.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def engine_info(folder: Path) -> dict[str, Any] | None:
    """What `engine.json` records, or None for a folder not written by the caption-engine trainer."""
    path = Path(folder) / ENGINE_INFO
    if not path.is_file():
        return None
    try:
        info = json.loads(path.read_text())
    except ValueError as err:
        raise ValueError(f"{path} is not JSON ({err})") from None
    return info if isinstance(info, dict) else None


def load_image_text_model(folder: Path, dtype: Any, trust_remote_code: bool = False,
                          resolve: Any = None) -> Any:
    """The model of a plain folder, or base + adapter merged (generation runs at merged speed)."""
    from transformers import AutoModelForImageTextToText

    base = adapter_base(folder)
    path = folder if base is None else (resolve(base) if resolve else base)
    model = AutoModelForImageTextToText.from_pretrained(path, local_files_only=True, dtype=dtype,
                                                        trust_remote_code=trust_remote_code)
    if base is None:
        return model
    from peft import PeftModel

    return PeftModel.from_pretrained(model, str(folder), is_trainable=False).merge_and_unload()
