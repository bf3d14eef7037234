"""UniPT and SHERL against full fine-tuning and a linear probe at a realistic size: memory saved
for backward, trainable parameters, optimiser state and seconds per step, side by side in one
process on the same batches.

Backbones with random weights at their real architectures' sizes (memory and speed do not depend
on the weights): a BERT-base text tower (hidden 768, 12 layers, 12 heads, MLP 3072; captions of
`--seq` tokens) and a ResNet-50 image tower (transformers ResNetConfig defaults: bottleneck stages
of 256/512/1024/2048 channels, depths 3/4/6/3), heads at the originals' sizes (side 512, embedding
1024). Each method: `--steps` timed optimiser steps (Adam, the core's optimiser) after one warm-up
step, each forward under `SavedTensorMeter`, the optimiser's state read back by `OptimizerStateMeter`;
then rSum on a small synthetic test split (random weights and a few steps: chance level, reported
only so the table has the same columns as `fusionweave eval --compare`). On a GPU (`--device cuda`)
`torch.cuda.max_memory_allocated` is added.

    python benchmarks/bench_transfer.py                     # 224 px, batch 8, 3 steps: about 5 min on 2 cores
    python benchmarks/bench_transfer.py --image-size 512 --batch 32 --steps 20 --device cuda
"""
from __future__ import annotations

import argparse
import gc
import random
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import Result, emit, parse  # noqa: E402
from fusionweave.experts.tiny_models import make_tiny_bert
from fusionweave.trainers.matching import data
from fusionweave.trainers.matching.encoders import contrastive_loss
from fusionweave.trainers.matching.train import read_split
from fusionweave.trainers.matching.transfer.memory import OptimizerStateMeter, SavedTensorMeter
from fusionweave.trainers.matching.transfer.method import TRANSFER_METHODS, TransferConfig, build, retrieval

MIB = 2 ** 20


def backbones(root: Path) -> tuple[Path, Path]:
    from transformers import BertConfig, BertModel, BertTokenizerFast, ResNetConfig, ResNetModel

    text, image = root / "bert-base", root / "resnet-50"
    tok = BertTokenizerFast.from_pretrained(make_tiny_bert(root / "words"))  # the synthetic captions' words
    BertModel(BertConfig(vocab_size=30522), add_pooling_layer=False).save_pretrained(text)  # BERT-base sizes
    tok.save_pretrained(text)
    ResNetModel(ResNetConfig()).save_pretrained(image)  # ResNet-50 sizes
    return text, image


def measure(method: str, cfg: TransferConfig, batches: list, test: tuple, device: torch.device) -> dict:
    torch.manual_seed(0)
    net = build(method, cfg).to(device)
    net.train()
    params = [p for p in net.parameters() if p.requires_grad]
    meter_opt = OptimizerStateMeter(params)
    opt = torch.optim.Adam(params, lr=cfg.lr)
    exclude = list(net.parameters())
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
    saved, times = [], []
    for i, (images, ids, mask) in enumerate(batches):
        t = time.perf_counter()
        with SavedTensorMeter(exclude) as meter:
            loss = contrastive_loss(net(images.to(device), ids.to(device), mask.to(device)), cfg.margin, hardest=True)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i:  # the first step warms up (allocator, kernels)
            times.append(time.perf_counter() - t)
        saved.append(meter.bytes)
    meter_opt.close()
    row = {"method": method, "saved_mib": max(saved) / MIB, "trainable_params": sum(p.numel() for p in params),
           "optimizer_state_mib": meter_opt.bytes / MIB, "sec_per_step": sum(times) / len(times)}
    if device.type == "cuda":
        row["cuda_max_allocated_mib"] = torch.cuda.max_memory_allocated(device) / MIB
    row["rsum"] = retrieval(net, *test, device)["rsum"]
    del net, opt
    gc.collect()
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=32, help="caption tokens (padded/truncated)")
    ap.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up step")
    ap.add_argument("--test-images", type=int, default=20)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--methods", default=",".join(TRANSFER_METHODS))
    args = parse(ap, {"ci": {"image_size": 64, "batch": 2, "seq": 8, "steps": 1, "test_images": 5}})
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        text, image = backbones(root)
        data.synthetic(root / "data", {"test": args.test_images}, size=64)
        cfg = TransferConfig.model_validate({"train": str(root / "data" / "test"), "test": str(root / "data" / "test"),
                                             "text": {"model": str(text), "max_len": args.seq},
                                             "image": {"model": str(image), "image_size": args.image_size}})
        images, captions = read_split(root / "data" / "test")
        tok = build("linear-probe", cfg).text_backbone
        rng = random.Random(0)
        batches = []
        for _ in range(args.steps + 1):
            idx = [rng.randrange(len(images)) for _ in range(args.batch)]
            # every caption --seq tokens long (captions repeated, then cut): COCO-length text
            t = tok.tokenizer([" ".join([captions[5 * i]] * 4) for i in idx], padding="max_length", truncation=True,
                              max_length=args.seq, return_tensors="pt")
            batches.append((images[idx], t["input_ids"], t["attention_mask"]))
        rows = [measure(m, cfg, batches, (images, captions), device) for m in args.methods.split(",")]
    full = next(r for r in rows if r["method"] == "full-finetune")
    setting = f"BERT-base + ResNet-50 (random weights), {args.image_size} px, batch {args.batch}, {args.seq} tokens"
    emit([Result(f"transfer/{r['method']}", f"{r['method']} vs full fine-tuning, bytes saved for backward, {setting}",
                 r["saved_mib"], full["saved_mib"], "MiB", "<= 0.35" if r["method"] == "unipt" else None,
                 {**r, "sec_per_step_vs_full": round(r["sec_per_step"] / full["sec_per_step"], 3)})
          for r in rows if r is not full], args)


if __name__ == "__main__":
    main()
