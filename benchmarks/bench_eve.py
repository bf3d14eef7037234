"""EVE training throughput in the training core vs a bare PyTorch loop, and the data path vs the trainer.

train: tokens/s of EVE's stage-2 step (everything trains, PAL on, plain captions) run by the core's
       `fit` (trainers/core/loop.py: Accelerate, the schedule, per-step logging, the epoch-end
       checkpoint and final save) against a bare loop doing the same forward, backward, AdamW step,
       LambdaLR step and zero_grad on the same batches (the stage loader's batches, collected first;
       `fit` reads the same batch objects through a list loader, so neither side pays for loading,
       which the data part measures), with the same model built the same way. Steady state: the steps after the first, timed step to
       step (ours from inside `fit`, by `after_step`); ours end to end (with the checkpoint of model +
       optimiser and the final save) is reported beside it. Tokens: each sample's text tokens with its
       `<image>` replaced by the image's tokens (no padding).
       Model (random weights, a real architecture at its real size, CPU-feasible): SmolLM2-135M's Llama
       config whole (hidden 576, MLP 1536, 30 layers, 9 heads, 3 KV heads, vocab 49152, tied embeddings;
       `--arch tinyllama-1.1b --layers N` for a 1B-class width at a few layers); EVE's PEL at the
       paper's size (C 1024, 8 heads, patch 14, projector 1024 -> 576 -> 576); a CLIP-L/14-width teacher
       (hidden 1024, MLP 4096, 16 heads) with 2 of its 24 layers at 224 px; the PAL on 2 LLM layers.
       Images 224 px max side (`--image-side`; the paper's 672 makes 9x the image tokens): up to 8 x 8
       grids, 73 image tokens; captions about 27 words: 336 tokens a step of 4. 152M parameters, all
       trained.
data:  samples/s of EVE's two loaders (caption shards through `shard_loader`; LLaVA conversation JSON
       through `ConversationLoader`), decoding, preprocessing, tokenising and collating, no model,
       against the samples/s the trainer consumes: the bare step rate (forward, backward, AdamW) of the
       tiny EVE the tests use (a 2-layer Llama of width 64, PEL 32, 32 px images), stage 2 for
       captions and stage 3 (vicuna_v1, no PAL) for conversations, on the same data, alternated
       repetition by repetition. The tiny trainer is the hardest consumer to keep fed; the real-size
       trainer is compared too (640x480 JPEGs).
The tiny training pair (one thread) also runs: there the core's own per-step cost is most visible.
Figures and their reading: benchmarks/README.md.

    python benchmarks/bench_eve.py            # all: tiny, real, data (about 6 min on 2 quiet cores)
    python benchmarks/bench_eve.py --parts tiny data --samples 256 --tiny-repeat 2 --data-repeat 2   # quick
"""
from __future__ import annotations

import argparse
import gc
import io
import json
import random
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import Result, emit, parse  # noqa: E402
from fusionweave.trainers.core.loop import fit  # noqa: E402
from fusionweave.trainers.eve.data import ConversationLoader, Encoder, shard_loader, to_device  # noqa: E402
from fusionweave.trainers.eve.image import num_tokens  # noqa: E402
from fusionweave.trainers.eve.method import EveConfig, EveMethod  # noqa: E402

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220), "white": (240, 240, 240)}
WORDS = ("a the of and in on with near left right top bottom red green blue white black dog cat person car tree "
         "sky grass road sign text reads large small two three building window standing sitting square circle "
         "photo shows picture scene").split()
QUESTION = "what is in this image?"


# ---------------------------------------------------------------- data
def picture(rng: random.Random, size: tuple[int, int]) -> tuple[Image.Image, str, str]:
    w, h = size
    im = Image.new("RGB", (w, h), (rng.randint(0, 60),) * 3)
    colour, shape = rng.choice(sorted(COLOURS)), rng.choice(["square", "circle"])
    r = max(2, min(w, h) // 3)
    cx, cy = rng.randint(r, w - r), rng.randint(r, h - r)
    draw = ImageDraw.Draw(im)
    (draw.rectangle if shape == "square" else draw.ellipse)((cx - r, cy - r, cx + r, cy + r), fill=COLOURS[colour])
    return im, colour, shape


def caption(rng: random.Random, colour: str, shape: str, words: int) -> str:
    return " ".join([f"a {colour} {shape}", *(rng.choice(WORDS) for _ in range(words))])


def make_data(root: Path, n: int, size: tuple[int, int] | None, fmt: str, words: int, per_shard: int = 256) -> dict:
    """n images (size None: 16-48 px shape images as the tests' tiny set; else w x h), written both as
    caption shards (image + txt) and as LLaVA JSON rows (plain captions and vicuna_v1 QA) with files."""
    marker = root / "made.json"
    want = {"n": n, "size": size, "fmt": fmt, "words": words}
    if not (marker.exists() and json.loads(marker.read_text()) == want):
        from fusionweave.pipelines.storage.shard_sink import write_shard

        shutil.rmtree(root, ignore_errors=True)
        (root / "images").mkdir(parents=True)
        rng = random.Random(0)
        samples, caps, sft = [], [], []
        for i in range(n):
            im, colour, shape = picture(rng, size or (rng.randint(16, 48), rng.randint(16, 48)))
            buf = io.BytesIO()
            im.save(buf, "JPEG", quality=90) if fmt == "jpg" else im.save(buf, "PNG")
            data, text = buf.getvalue(), caption(rng, colour, shape, words)
            name = f"images/{i:06d}.{fmt}"
            (root / name).write_bytes(data)
            samples.append({"__key__": f"{i:06d}", fmt: data, "txt": text})
            caps.append({"id": f"c{i}", "image": name, "conversations": [
                {"from": "human", "value": "<image>"}, {"from": "gpt", "value": text}]})
            sft.append({"id": f"q{i}", "image": name, "conversations": [
                {"from": "human", "value": f"<image>\n{QUESTION}"}, {"from": "gpt", "value": text}]})
        for s in range(0, n, per_shard):
            write_shard(root / f"shard-{s // per_shard:06d}.tar", samples[s:s + per_shard])
        (root / "captions.json").write_text(json.dumps(caps))
        (root / "sft.json").write_text(json.dumps(sft))
        marker.write_text(json.dumps(want))
    return {"shards": sorted(root.glob("shard-*.tar")), "captions": root / "captions.json", "sft": root / "sft.json",
            "root": root}


# ---------------------------------------------------------------- models
ARCHS = {
    # SmolLM2-135M's Llama config at its full depth (a real model at its real size, tied embeddings)
    "smollm2-135m": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                         num_key_value_heads=3, vocab_size=49152, rope_theta=100000.0, tie_word_embeddings=True),
    # TinyLlama-1.1B's (a 1B-class width; use --layers to keep it CPU-feasible)
    "tinyllama-1.1b": dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
                           num_key_value_heads=4, vocab_size=32000, rope_theta=10000.0, tie_word_embeddings=False),
}


def real_models(root: Path, arch: str, layers: int | None) -> tuple[Path, Path]:
    """A Llama of `arch`'s config (random weights; `layers` overrides its depth) with a word-level
    tokenizer, and a CLIP-L/14-width teacher (hidden 1024, 2 of its 24 layers, 224 px)."""
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel, LlamaConfig, LlamaForCausalLM

    from fusionweave.experts.tiny_models import CHAT_WORDS, make_word_tokenizer

    spec = {**ARCHS[arch], **({"num_hidden_layers": layers} if layers else {})}
    llm, teacher = root / f"llm-{arch}-{spec['num_hidden_layers']}", root / "teacher"
    if not (llm / "config.json").exists():
        torch.manual_seed(0)
        tok = make_word_tokenizer([*CHAT_WORDS, *WORDS])
        cfg = LlamaConfig(**spec, max_position_embeddings=2048, rms_norm_eps=1e-5, bos_token_id=tok.bos_token_id,
                          eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
        LlamaForCausalLM(cfg).save_pretrained(llm)
        tok.save_pretrained(llm)
    if not (teacher / "config.json").exists():
        torch.manual_seed(0)
        vision = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=2, num_attention_heads=16,
                                  image_size=224, patch_size=14)
        CLIPVisionModel(vision).save_pretrained(teacher)
        CLIPImageProcessor(size={"shortest_edge": 224},
                           crop_size={"height": 224, "width": 224}).save_pretrained(teacher)
    return llm, teacher


def tiny_models(root: Path) -> tuple[Path, Path]:
    from fusionweave.experts.tiny_models import make_tiny_llm, make_tiny_vision_teacher

    llm, teacher = root / "tiny-llm", root / "tiny-teacher"
    if not (llm / "config.json").exists():
        make_tiny_llm(llm, words=[*WORDS, *QUESTION.split()])
        make_tiny_vision_teacher(teacher)
    return llm, teacher


def real_arch(args: argparse.Namespace) -> dict:
    """EVE's PEL at the paper's size; the PAL on 2 layers (the paper: 9, every 4th of 32)."""
    depth = args.layers or ARCHS[args.arch]["num_hidden_layers"]
    every = max(1, depth // 2)
    return {"image": {"max_side": args.image_side, "patch": 14}, "pel": {"width": 1024, "heads": 8},
            "pal": {"every": every, "layers": 2, "heads": 8}}
TINY = {"image": {"max_side": 32, "patch": 4}, "pel": {"width": 32, "heads": 4},
        "pal": {"every": 1, "layers": 2, "heads": 4}}


def eve_config(models: tuple[Path, Path], arch: dict, data: dict, stage: int, batch: int, workers: int,
               lr: float = 1e-4) -> EveConfig:
    source = {"path": data["captions"] if stage < 3 else data["sft"], "image_root": data["root"]}
    st = {"data": {"conversations": [source], "batch_size": batch, "workers": workers},
          "recipe": {"lr": lr, "device": "cpu"}}
    return EveConfig(llm=models[0], teacher=models[1], **arch, **{f"stage{stage}": st})


# ---------------------------------------------------------------- training
def tokens(batch: dict[str, Any]) -> int:
    """Sequence tokens the LLM runs: the text with `<image>` replaced by the image's tokens."""
    return sum(len(ids) - 1 + num_tokens(tuple(g)) for ids, g in zip(batch["input_ids"], batch["grids"].tolist()))


class Batches:
    """The core's Loader protocol over batches already made (the ones the bare loop gets)."""

    def __init__(self, batches: list[dict]):
        self.batches, self.done = batches, 0

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        for b in self.batches[self.done:]:
            self.done += 1
            yield b
        self.done = 0

    def state_dict(self) -> dict[str, int]:
        return {"batches": self.done}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.done = int(state["batches"])


class Timed(EveMethod):
    """EveMethod noting the time after each optimiser step and each batch's tokens and samples;
    with `batches`, it reads those instead of its own loader."""

    def __init__(self, cfg: EveConfig, stage: int, batches: list[dict] | None = None):
        super().__init__(cfg, stage)
        self.batches = batches
        self.marks: list[tuple[float, float]] = []
        self.tokens: list[int] = []
        self.samples: list[int] = []

    def loader(self, rank: int, world: int):
        return Batches(self.batches) if self.batches is not None else super().loader(rank, world)

    def loss(self, model, batch, ctx):
        self.tokens.append(tokens(batch))
        self.samples.append(len(batch["input_ids"]))
        return super().loss(model, batch, ctx)

    def after_step(self, model) -> None:
        self.marks.append(clock())


def clock() -> tuple[float, float]:
    """(wall, this process's CPU) seconds. CPU time is steadier on a shared machine; on one thread it
    is the work done, on more it also counts the threads' spinning."""
    return time.perf_counter(), time.process_time()


def sig(x: float, digits: int = 3) -> float:
    return float(f"{x:.{digits}g}")


def steady(marks: list[tuple[float, float]], toks: list[int], samples: list[int]) -> dict:
    """Steps 2..N (one batch a step): from the end of step 1 to the end of step N."""
    secs, cpu = marks[-1][0] - marks[0][0], marks[-1][1] - marks[0][1]
    n = len(marks) - 1
    return {"steps": n, "seconds": round(secs, 3), "tokens_per_s": sig(sum(toks[1:]) / secs),
            "tokens_per_cpu_s": sig(sum(toks[1:]) / cpu), "samples_per_s": sig(sum(samples[1:]) / secs),
            "s_per_step": sig(secs / n), "cpu_s_per_step": sig(cpu / n)}


def run_ours(cfg: EveConfig, stage: int, out: Path, batches: list[dict] | None) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    method = Timed(cfg, stage, batches)
    t0 = time.perf_counter()
    fit(method, out, progress=False)
    total = time.perf_counter() - t0
    res = steady(method.marks, method.tokens, method.samples)
    res["end_to_end_s"] = round(total, 2)  # with model build, the checkpoint and the final save
    del method
    gc.collect()
    shutil.rmtree(out, ignore_errors=True)
    return res


def collect(cfg: EveConfig, stage: int) -> list[dict]:
    """The batches the core's loader gives this stage (rank 0 of 1, epoch 0), in order."""
    return list(EveMethod(cfg, stage).loader(0, 1))


def run_bare(cfg: EveConfig, stage: int, batches: list[dict]) -> dict:
    """The same model, built the same way; a bare loop of forward, backward, AdamW step, LambdaLR
    step and zero_grad over the same batches."""
    method = EveMethod(cfg, stage)
    r = method.recipe
    torch.manual_seed(r.seed)
    model = method.model().train()
    params = method.parameters(model)
    opt = torch.optim.AdamW(params, lr=r.lr, betas=r.betas, weight_decay=r.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: r.lr_factor(s, len(batches), len(batches)))
    marks, toks, samples = [], [], []
    cpu = torch.device("cpu")
    for batch in batches:
        toks.append(tokens(batch))
        samples.append(len(batch["input_ids"]))
        loss = model(to_device(batch, cpu))["loss"]
        loss.backward()
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        marks.append(clock())
    res = steady(marks, toks, samples)
    del model, opt, params, method
    gc.collect()
    return res


def pair(label: str, cfg: EveConfig, stage: int, batches: list[dict], repeat: int, out: Path,
         one_thread: bool = False) -> dict:
    """Bare and ours alternated run by run (drift on a shared machine hits both). Reported: the median
    of the pairwise ratios (wall and CPU), their range, the ratio of each side's best (least disturbed)
    run, and on one thread the core's own cost per step (median CPU seconds per step, ours - bare)."""
    runs: dict[str, list[dict]] = {"bare": [], "ours": []}
    for rep in range(repeat):
        for name in (("bare", "ours") if rep % 2 == 0 else ("ours", "bare")):
            res = run_bare(cfg, stage, batches) if name == "bare" else run_ours(cfg, stage, out, batches)
            runs[name].append(res)
            print(f"{label} {name} run {rep}: {json.dumps(res)}", flush=True)
    o, b = runs["ours"], runs["bare"]
    wall = [x["tokens_per_s"] / y["tokens_per_s"] for x, y in zip(o, b)]
    cpu = [x["tokens_per_cpu_s"] / y["tokens_per_cpu_s"] for x, y in zip(o, b)]
    res = {"tokens_per_step": round(sum(tokens(x) for x in batches) / len(batches)),
           "samples_per_step": round(sum(len(x["input_ids"]) for x in batches) / len(batches), 1),
           "runs": repeat, "ours_vs_bare": round(statistics.median(wall), 3),
           "ours_vs_bare_best": round(max(x["tokens_per_s"] for x in o) / max(x["tokens_per_s"] for x in b), 3),
           "ours_vs_bare_range": [round(min(wall), 3), round(max(wall), 3)],
           "ours_vs_bare_cpu": round(statistics.median(cpu), 3),
           "ours_vs_bare_cpu_range": [round(min(cpu), 3), round(max(cpu), 3)],
           "ours_best_tokens_per_s": max(x["tokens_per_s"] for x in o),
           "bare_best_tokens_per_s": max(x["tokens_per_s"] for x in b),
           "bare_best_samples_per_s": max(x["samples_per_s"] for x in b),
           "bare_s_per_step": statistics.median(x["s_per_step"] for x in b),
           "ours_end_to_end_s": min(x["end_to_end_s"] for x in o)}
    if one_thread:
        res["core_ms_per_step"] = round(1000 * (statistics.median(x["cpu_s_per_step"] for x in o)
                                                - statistics.median(x["cpu_s_per_step"] for x in b)), 2)
    print(f"{label}: ours/bare {res['ours_vs_bare']}x tokens/s (median of {repeat} pairs, range "
          f"{res['ours_vs_bare_range']}; per CPU second {res['ours_vs_bare_cpu']}x); best runs ours "
          f"{res['ours_best_tokens_per_s']}, bare {res['bare_best_tokens_per_s']} tokens/s "
          f"({res['ours_vs_bare_best']}x)" + (f"; the core's own cost {res['core_ms_per_step']} ms a step"
                                              if one_thread else ""), flush=True)
    return res


def bench_real(args: argparse.Namespace, tiny: dict | None) -> dict:
    data = make_data(args.work / "data-real", args.steps * args.batch, (640, 480), "jpg", args.words)
    models = real_models(args.work / "models", args.arch, args.layers)
    cfg = eve_config(models, real_arch(args), data, args.stage, args.batch, workers=0)
    m = EveMethod(cfg, args.stage)
    model = m.model()
    size = {"parameters_M": round(sum(p.numel() for p in model.parameters()) / 1e6, 1),
            "trained_M": round(sum(p.numel() for p in m.parameters(model)) / 1e6, 1)}
    del model, m
    gc.collect()
    label = f"train real ({args.arch}, stage {args.stage}, batch {args.batch}, {args.threads} threads)"
    res = pair(label, cfg, args.stage, collect(cfg, args.stage), args.repeat, args.work / "fit-out")
    out = {"arch": args.arch, "layers": args.layers, "image_side": args.image_side, "stage": args.stage,
           "batch": args.batch, "steps": args.steps, **size, **res}
    if tiny is not None:  # the core's per-step cost measured where it is visible, against this step
        ms = max(v["core_ms_per_step"] for v in tiny.values())
        out["bound_from_tiny_overhead"] = round(1 / (1 + ms / 1000 / res["bare_s_per_step"]), 5)
        print(f"{label}: the core's per-step cost at the tiny size ({ms} ms) is "
              f"{100 * ms / 1000 / res['bare_s_per_step']:.3f}% of this step", flush=True)
    return out


def tiny_set(args: argparse.Namespace) -> tuple[dict, dict[int, EveConfig]]:
    data = make_data(args.work / "data-tiny", args.samples, None, "png", args.words)
    models = tiny_models(args.work / "models")
    return data, {st: eve_config(models, TINY, data, st, args.tiny_batch, workers=args.tiny_workers, lr=1e-3)
                  for st in (2, 3)}


def bench_tiny(args: argparse.Namespace) -> dict:
    """The tests' tiny EVE on one thread: the core's own per-step cost at its most visible."""
    data, cfgs = tiny_set(args)
    out = {}
    torch.set_num_threads(1)
    try:
        for st, cfg in cfgs.items():
            batches = collect(cfg, st)
            res = pair(f"train tiny (stage {st}, batch {args.tiny_batch}, 1 thread)", cfg, st, batches,
                       args.tiny_repeat, args.work / "fit-out", one_thread=True)
            # and end to end with its own loader (DataLoader workers), as a run would be
            own = [run_ours(cfg, st, args.work / "fit-out", None)["tokens_per_s"] for _ in range(2)]
            res["ours_own_loader_vs_bare_best"] = round(max(own) / res["bare_best_tokens_per_s"], 3)
            print(f"train tiny (stage {st}) with its own loader ({args.tiny_workers} workers): {max(own)} tokens/s, "
                  f"{res['ours_own_loader_vs_bare_best']}x the best bare run", flush=True)
            out[f"stage{st}"] = res
    finally:
        torch.set_num_threads(args.threads)
    return out


# ---------------------------------------------------------------- data path
def loader_pass(make) -> float:
    ld = make()
    t0 = time.perf_counter()
    n = sum(len(b["input_ids"]) for b in ld)
    return n / (time.perf_counter() - t0)


def encoder(cfg: EveConfig, stage: int) -> Encoder:
    tok, image_id = EveMethod(cfg, stage).tokenizer()
    st = cfg.stage(stage)
    return Encoder(tok, image_id, cfg.image, st.template, st.data.max_length)


def makers(cfg2: EveConfig, cfg3: EveConfig, data: dict, batch: int, workers: int) -> dict:
    """The caption-shard loader (stage 2's encoding) and the conversation loader (stage 3's)."""
    enc2, enc3 = encoder(cfg2, 2), encoder(cfg3, 3)
    return {"shards": lambda: shard_loader(data["shards"], enc2, batch, workers=workers),
            "conversations": lambda: ConversationLoader.from_files([(data["sft"], data["root"])], enc3, batch,
                                                                   workers=workers)}


def bench_data(args: argparse.Namespace, real: dict | None) -> dict:
    """Side by side, repetition by repetition: the tiny trainer's bare step rate on the stage's batches,
    then each loader's pass over the same samples; the ratio per repetition, its median and range."""
    data, cfgs = tiny_set(args)
    stage_of = {"shards": 2, "conversations": 3}
    batches = {st: collect(cfg, st) for st, cfg in cfgs.items()}
    loads = {w: makers(cfgs[2], cfgs[3], data, args.tiny_batch, w) for w in args.workers}
    for w in args.workers:  # warm: file cache, tokenizer, imports in this process
        for mk in loads[w].values():
            loader_pass(mk)
    eat: dict[str, list[float]] = {k: [] for k in stage_of}
    rate: dict[tuple[str, int], list[float]] = {(k, w): [] for k in stage_of for w in args.workers}
    for _ in range(args.data_repeat):
        for kind, st in stage_of.items():
            torch.set_num_threads(1)
            eat[kind].append(run_bare(cfgs[st], st, batches[st])["samples_per_s"])
            torch.set_num_threads(args.threads)
            for w in args.workers:
                rate[kind, w].append(loader_pass(loads[w][kind]))
    out: dict[str, Any] = {"repeats": args.data_repeat,
                           "tiny_trainer_samples_per_s": {k: sig(statistics.median(v)) for k, v in eat.items()}}
    for (kind, w), v in rate.items():
        ratios = [r / e for r, e in zip(v, eat[kind])]
        out[f"tiny_{kind}_workers{w}"] = {"samples_per_s": sig(statistics.median(v)),
                                          "vs_trainer": round(statistics.median(ratios), 2),
                                          "vs_trainer_range": [round(min(ratios), 2), round(max(ratios), 2)]}
        print(f"data tiny, {kind}, {w} workers: {sig(statistics.median(v))} samples/s, "
              f"{statistics.median(ratios):.2f}x the stage-{stage_of[kind]} trainer's "
              f"{sig(statistics.median(eat[kind]))} (median of {args.data_repeat}, range "
              f"{min(ratios):.2f}-{max(ratios):.2f})", flush=True)
    if real is not None:  # 640x480 JPEGs to --image-side, against the real-size trainer measured above
        data = make_data(args.work / "data-real-loader", args.samples // 2, (640, 480), "jpg", args.words)
        models = real_models(args.work / "models", args.arch, args.layers)
        c2, c3 = (eve_config(models, real_arch(args), data, st, args.batch, workers=0) for st in (2, 3))
        eat_real = real["bare_best_samples_per_s"]
        for kind, mk in makers(c2, c3, data, args.batch, 0).items():
            r = max(loader_pass(mk) for _ in range(2))
            out[f"real_{kind}_workers0"] = {"samples_per_s": sig(r), "vs_trainer": round(r / eat_real)}
            print(f"data real size (640x480 JPEG -> {args.image_side} px), {kind}, 0 workers: {sig(r)} samples/s, "
                  f"{r / eat_real:.0f}x the real-size stage-{args.stage} trainer's {eat_real}", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--parts", nargs="+", choices=["tiny", "real", "data"], default=["tiny", "real", "data"])
    ap.add_argument("--arch", choices=sorted(ARCHS), default="smollm2-135m", help="the LLM's real config")
    ap.add_argument("--layers", type=int, default=None, help="override the LLM's depth")
    ap.add_argument("--image-side", type=int, default=224, help="EVE's max side (the paper: 672)")
    ap.add_argument("--stage", type=int, choices=[2, 3], default=2, help="the EVE stage timed at the real size")
    ap.add_argument("--steps", type=int, default=4, help="optimiser steps per real-size run (the first is warm-up)")
    ap.add_argument("--batch", type=int, default=4, help="samples per step at the real size")
    ap.add_argument("--words", type=int, default=24, help="extra caption words per sample")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each side at the real size")
    ap.add_argument("--tiny-repeat", type=int, default=5, help="runs of each side at the tiny size")
    ap.add_argument("--data-repeat", type=int, default=5, help="trainer/loader repetitions in the data part")
    ap.add_argument("--samples", type=int, default=1024, help="samples in the tiny set (and half in the real one)")
    ap.add_argument("--tiny-batch", type=int, default=16)
    ap.add_argument("--tiny-workers", type=int, default=2, help="DataLoader workers of the tiny run's own loader")
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="DataLoader workers for the loaders")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--work", type=Path, default=Path("/tmp/fusionweave-bench-eve"))
    args = parse(ap, {"ci": {"parts": ["tiny", "data"], "samples": 64, "tiny_repeat": 1, "data_repeat": 1,
                             "workers": [0]}})
    torch.set_num_threads(args.threads)
    res: dict[str, Any] = {}
    if "tiny" in args.parts:
        res["tiny"] = bench_tiny(args)
    if "real" in args.parts:
        res["real"] = bench_real(args, res.get("tiny"))
    if "data" in args.parts:
        res["data"] = bench_data(args, res.get("real"))
    emit(results(res, args), args)


def results(res: dict[str, Any], args: argparse.Namespace) -> list[Result]:
    """Best run against best run (the least disturbed of each side); medians in the details."""
    out = [Result(f"eve/train tiny, stage {st[-1]}", f"core fit vs a bare PyTorch loop, tiny EVE, 1 thread, "
                  f"{args.tiny_repeat} pairs", r["ours_best_tokens_per_s"], r["bare_best_tokens_per_s"], "tokens/s",
                  ">= 0.9", r) for st, r in res.get("tiny", {}).items()]
    if "real" in res:
        r = res["real"]
        out.append(Result(f"eve/train {args.arch}", f"core fit vs a bare PyTorch loop, stage {args.stage}, "
                          f"{r['parameters_M']}M parameters (random weights), {args.repeat} pairs",
                          r["ours_best_tokens_per_s"], r["bare_best_tokens_per_s"], "tokens/s", ">= 0.9", r))
    data = res.get("data", {})
    for key, r in data.items():
        if isinstance(r, dict) and "vs_trainer" in r:
            size, kind = key.split("_", 1)
            trainer = (data["tiny_trainer_samples_per_s"][kind.rsplit("_", 1)[0]] if size == "tiny"
                       else res["real"]["bare_best_samples_per_s"])
            out.append(Result(f"eve/data {size} {kind}", f"the loader's samples/s vs the {size} trainer's bare "
                              f"samples/s", r["samples_per_s"], trainer, "samples/s", ">= 5.0", r))
    return out


if __name__ == "__main__":
    main()
