"""Captioners behind one interface: a model step whose batch carries `key`, `image` (encoded
bytes), `prompt` (the fusion prompt, image placeholder excluded) and `priors` (JSON), and which
adds `caption`, `finish_reason` ("stop" | "length") and `caption_error` (str, "" when none).

- `transformers`: any `AutoModelForImageTextToText` (LLaVA, LLaVA-NeXT, ...) from a local path
  or the local HF cache, batched `generate` with the processor's own high-resolution handling
  and chat template. Pixel processing runs inside the worker: LLaVA-NeXT's any-resolution tiles
  vary per image, and generation dwarfs it.
- `openai`: see `experts.openai_captioner`.
- `priors-template`: a deterministic caption written from the priors alone, for offline demos;
  the outputs and the card always say so.
"""
from __future__ import annotations

import json
from typing import Any

import numpy as np

from fusionweave.experts.base import Batch, ModelStep, Resources
from fusionweave.experts.expert import ExpertError
from fusionweave.experts.pixels import decode_rgb, error_text, torch_device
from fusionweave.experts.engine_folder import adapter_base, engine_info, load_image_text_model
from fusionweave.experts.resolve import resolve_model

CAPTION, FINISH, ERROR = "caption", "finish_reason", "caption_error"
PRIORS_TEMPLATE = "priors-template"


def outputs(batch: Batch, captions: list[str], finish: list[str], errors: list[str]) -> Batch:
    batch[CAPTION] = np.array(captions, dtype=object)
    batch[FINISH] = np.array(finish, dtype=object)
    batch[ERROR] = np.array(errors, dtype=object)
    return batch


class Captioner(ModelStep):
    name = "captioner"
    kind = ""

    def info(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind}


class PriorsTemplateCaptioner(Captioner):
    """Not a model: sentences filled in from the priors, so the pipeline runs end to end offline.
    Every caption starts with a marker saying so."""

    kind = PRIORS_TEMPLATE
    MARKER = "[priors-template caption, not written by a model]"

    def __init__(self, resources: Resources = Resources()):
        self.resources = resources

    @classmethod
    def write(cls, priors: dict[str, Any]) -> str:
        parts = [cls.MARKER]
        if priors.get("alt_text"):
            parts.append(f"Its web caption reads \"{priors['alt_text']}\".")
        tags = [t for t, _ in priors.get("tags", [])]
        if tags:
            parts.append(f"Tagged as {', '.join(tags[:-1]) + ' and ' + tags[-1] if len(tags) > 1 else tags[0]}.")
        labels: dict[str, int] = {}
        for d in priors.get("detections", []):
            labels[d["label"]] = labels.get(d["label"], 0) + 1
        if labels:
            things = [f"{n} {lab}" if n > 1 else f"a {lab}" for lab, n in labels.items()]
            parts.append(f"Detected: {', '.join(things)}.")
        ocr = [t for t, _ in priors.get("ocr", [])]
        if ocr:
            parts.append("Visible text: " + "; ".join(f"\"{t}\"" for t in ocr) + ".")
        near = [lab for lab, _ in sorted(priors.get("depth", []), key=lambda x: -x[1])]
        if near:
            parts.append(f"Nearest to the camera: {near[0]}.")
        return " ".join(parts)

    def process(self, batch: Batch) -> Batch:
        caps = [self.write(json.loads(p)) for p in batch["priors"]]
        n = len(caps)
        return outputs(batch, caps, ["stop"] * n, [""] * n)

    def info(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "model": PRIORS_TEMPLATE, "note": self.MARKER}


class TransformersCaptioner(Captioner):
    kind = "transformers"

    def __init__(self, model: str, revision: str | None = None, resources: Resources = Resources(),
                 max_new_tokens: int = 512, temperature: float = 0.0, top_p: float = 1.0, dtype: str = "float32",
                 trust_remote_code: bool = False):
        self.model, self.revision, self.resources = model, revision, resources
        self.max_new_tokens, self.temperature, self.top_p, self.dtype = max_new_tokens, temperature, top_p, dtype
        self.trust_remote_code = trust_remote_code
        self._net: Any = None

    def check(self) -> None:
        from transformers import AutoConfig
        from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

        path = resolve_model(self.model, self.revision)
        try:
            base = adapter_base(path)
        except ValueError as err:
            raise ExpertError(f"densefusion.captioner.model: {err}") from None
        mt = AutoConfig.from_pretrained(resolve_model(base) if base else path, local_files_only=True,
                                        trust_remote_code=self.trust_remote_code).model_type
        if mt not in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES:
            raise ExpertError(f"densefusion.captioner.model: model_type {mt!r} is not an image-text-to-text model")

    def setup(self) -> None:
        import torch
        from transformers import AutoProcessor

        torch.set_num_threads(self.resources.torch_threads())
        self.check()
        path = resolve_model(self.model, self.revision)
        self._device = torch_device(self.resources.num_gpus)
        self._proc = AutoProcessor.from_pretrained(path, local_files_only=True,
                                                   trust_remote_code=self.trust_remote_code)
        self._proc.tokenizer.padding_side = "left"  # batched generation continues every row at its end
        # a caption-engine folder may be a LoRA adapter over its base: merged here
        self._net = load_image_text_model(path, getattr(torch, self.dtype), self.trust_remote_code,
                                          resolve_model).to(self._device).eval()
        self._eos = {t for t in np.atleast_1d(self._net.generation_config.eos_token_id or []).tolist()}

    def _text(self, prompt: str) -> str:
        if getattr(self._proc, "chat_template", None):
            msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
            return self._proc.apply_chat_template(msgs, add_generation_prompt=True)
        image_token = getattr(self._proc, "image_token", "<image>")
        return f"{image_token}\n{prompt}"

    def generate(self, images: list[Any], prompts: list[str]) -> tuple[list[str], list[str]]:
        import torch

        enc = self._proc(images=images, text=[self._text(p) for p in prompts], return_tensors="pt",
                         padding=True).to(self._device)
        sample = self.temperature > 0
        kw = {"do_sample": sample, "max_new_tokens": self.max_new_tokens}
        if sample:
            kw.update(temperature=self.temperature, top_p=self.top_p)
        with torch.inference_mode():
            out = self._net.generate(**enc, **kw)
        new = out[:, enc["input_ids"].shape[1]:].cpu().numpy()
        captions, finish = [], []
        for row in new:
            ended = any(int(t) in self._eos for t in row)
            finish.append("length" if not ended and len(row) >= self.max_new_tokens else "stop")
            captions.append(self._proc.tokenizer.decode(row, skip_special_tokens=True).strip())
        return captions, finish

    def process(self, batch: Batch) -> Batch:
        n = len(batch["key"])
        caps, fin, errs = [""] * n, [""] * n, [""] * n
        images, ok = [], []
        for i, data in enumerate(batch["image"]):
            try:
                images.append(decode_rgb(data))
                ok.append(i)
            except Exception as err:  # noqa: BLE001 - this row's error
                errs[i] = error_text(err)
        if ok:
            try:
                c, f = self.generate(images, [batch["prompt"][i] for i in ok])
                for i, ci, fi in zip(ok, c, f):
                    caps[i], fin[i] = ci, fi
            except Exception:  # noqa: BLE001 - isolate: one row at a time
                for j, i in enumerate(ok):
                    try:
                        (caps[i],), (fin[i],) = self.generate([images[j]], [batch["prompt"][i]])
                    except Exception as err:  # noqa: BLE001
                        errs[i] = error_text(err)
        return outputs(batch, caps, fin, errs)

    def teardown(self) -> None:
        self._net = None

    def info(self) -> dict[str, Any]:
        info = {"name": self.name, "kind": self.kind, "model": str(self.model), "revision": self.revision,
                "max_new_tokens": self.max_new_tokens, "temperature": self.temperature, "top_p": self.top_p,
                "dtype": self.dtype}
        try:  # a fine-tuned caption engine names its checkpoint: every caption records which wrote it
            engine = engine_info(resolve_model(self.model, self.revision))
        except (OSError, ValueError):
            engine = None
        if engine is not None:
            info["engine"] = engine
        return info
