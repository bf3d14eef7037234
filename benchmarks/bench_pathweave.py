"""PathWeave's adapter-only stage against full fine-tuning of the same model: memory (bytes saved
for backward + Adam state) and seconds per optimiser step, in one process on the same batches.

The model is `PathWeaveModel` at a realistic size with random weights (memory and speed do not
depend on the weights): a BERT-base-size bridge (hidden 768, 12 layers, 12 heads, MLP 3072,
32 queries, cross-attention every 2nd layer, as BLIP-2's Q-Former) and a small Llama (hidden 1024,
8 layers, 16 heads, vocabulary 32,000) that fits two CPU cores, frozen. The frozen encoder is left
out (its features, 257 x 1408 as EVA-CLIP-g's, are fixed inputs), the same for both sides. Sides:
- `pathweave`: the fifth stage (point cloud): its adapter set, the in-adapters of the four earlier
  experts and its gate train; everything else is frozen;
- `full`: the same model with the bridge and its projection fully trained (what per-modality
  tuning of X-InstructBLIP trains), LLM frozen.
Each side: `--steps` timed Adam steps after one warm-up step, each forward under `SavedTensorMeter`
(trainers/matching/transfer/memory.py), the optimiser state read back after the step.

    python benchmarks/bench_pathweave.py               # batch 4, 3 steps: about 2 min on 2 cores
    python benchmarks/bench_pathweave.py --size ci     # a tiny bridge and LLM: seconds
"""
from __future__ import annotations

import argparse
import gc
import time

import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import Result, emit, parse  # noqa: E402
from fusionweave.trainers.matching.transfer.memory import SavedTensorMeter, state_bytes  # noqa: E402
from fusionweave.trainers.pathweave.config import BridgeConfig  # noqa: E402
from fusionweave.trainers.pathweave.model import PathWeaveModel  # noqa: E402

MODALITIES = ["image", "video", "audio", "depth", "pointcloud"]


class FixedFeatures(nn.Module):
    """A frozen encoder's output, precomputed: (B, tokens, width) random features."""

    def __init__(self, width: int, tokens: int):
        super().__init__()
        self.width, self.tokens = width, tokens

    def forward(self, batch: dict, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        f = batch["features"].to(device)
        return f, torch.ones(f.shape[:2], dtype=torch.bool, device=device)


def build(args: argparse.Namespace, side: str) -> PathWeaveModel:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    llm = LlamaForCausalLM(LlamaConfig(hidden_size=args.llm_hidden, intermediate_size=args.llm_hidden * 8 // 3,
                                       num_hidden_layers=args.llm_layers, num_attention_heads=16,
                                       num_key_value_heads=16, vocab_size=args.vocab))
    llm.requires_grad_(False)
    enc = {m: FixedFeatures(args.enc_width, args.tokens) for m in MODALITIES}
    h = args.bridge_hidden
    model = PathWeaveModel(llm, None, enc, BridgeConfig(hidden=h, layers=args.bridge_layers, heads=max(1, h // 64),
                                                        intermediate=4 * h))
    if side == "pathweave":
        later = MODALITIES[1:]
        model.add_routes({m: later[:i + 1] for i, m in enumerate(later)}, 8, gated=True)
        model.paths = {m: m for m in later}
        for n, p in model.named_parameters():
            p.requires_grad_(any(s in n for s in (".experts.pointcloud.", ".inner.pointcloud__", ".gates.pointcloud.")))
    else:
        for n, p in model.named_parameters():
            p.requires_grad_(n.startswith("bridge."))
    return model


def run(args: argparse.Namespace, side: str) -> dict:
    model = build(args, side)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5, weight_decay=0.05)
    g = torch.Generator().manual_seed(1)
    batch = {"features": torch.randn(args.batch, args.tokens, args.enc_width, generator=g)}
    ids = torch.randint(5, args.vocab, (args.batch, args.text), generator=g)
    labels, attn = ids.clone(), torch.ones_like(ids)
    saved, times = 0, []
    for step in range(args.steps + 1):
        t0 = time.perf_counter()
        with SavedTensorMeter(exclude=list(model.parameters())) as meter:
            loss = model("pointcloud", batch, ids, labels, attn)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step:  # the first step warms up (allocator, kernels)
            times.append(time.perf_counter() - t0)
        saved = max(saved, meter.bytes)
    out = {"side": side, "trainable": sum(p.numel() for p in params),
           "total": sum(p.numel() for p in model.parameters()), "saved_bytes": saved, "adam_bytes": state_bytes(opt),
           "s_per_step": sum(times) / len(times)}
    del model, opt
    gc.collect()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=257, help="encoder tokens per sample (EVA-CLIP-g at 224: 257)")
    ap.add_argument("--enc-width", type=int, default=1408)
    ap.add_argument("--text", type=int, default=32, help="question + answer tokens")
    ap.add_argument("--bridge-hidden", type=int, default=768)
    ap.add_argument("--bridge-layers", type=int, default=12)
    ap.add_argument("--llm-hidden", type=int, default=1024)
    ap.add_argument("--llm-layers", type=int, default=8)
    ap.add_argument("--vocab", type=int, default=32_000)
    args = parse(ap, {"ci": {"batch": 2, "steps": 1, "tokens": 17, "enc_width": 32, "text": 8, "bridge_hidden": 64,
                             "bridge_layers": 2, "llm_hidden": 64, "llm_layers": 2, "vocab": 1000}})
    rows = {s: run(args, s) for s in ("pathweave", "full")}
    mib = 2 ** 20
    for r in rows.values():
        print(f"{r['side']:>9}: trainable {r['trainable'] / 1e6:.2f}M of {r['total'] / 1e6:.1f}M "
              f"({100 * r['trainable'] / r['total']:.2f}%), saved for backward {r['saved_bytes'] / mib:.0f} MiB, "
              f"Adam state {r['adam_bytes'] / mib:.1f} MiB, {r['s_per_step']:.2f} s/step")
    pw, full = rows["pathweave"], rows["full"]
    setting = (f"bridge {args.bridge_hidden} x {args.bridge_layers} layers, LLM {args.llm_hidden} x {args.llm_layers}, "
               f"batch {args.batch}, {args.tokens} encoder tokens, random weights")
    both = {"pathweave": pw, "full": full}
    emit([Result("pathweave/memory", f"stage-5 adapters vs full bridge fine-tuning, bytes saved for backward + Adam "
                                     f"state, {setting}", (pw["saved_bytes"] + pw["adam_bytes"]) / mib,
                 (full["saved_bytes"] + full["adam_bytes"]) / mib, "MiB", "<= 0.6", both),
          Result("pathweave/trainable", f"stage-5 trainable parameters vs full bridge fine-tuning (paper: 98.73% "
                                        f"fewer), {setting}", pw["trainable"], full["trainable"], "params", "<= 0.02"),
          Result("pathweave/step", f"seconds per optimiser step, stage-5 adapters vs full bridge fine-tuning, "
                                   f"{setting}", pw["s_per_step"], full["s_per_step"], "s/step")], args)


if __name__ == "__main__":
    main()
