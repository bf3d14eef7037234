"""`fusionweave eval caption-engine`: the engine's captions on a held-out slice of the teacher set,
written by the same `transformers` captioner the densefusion build uses, scored against the
teacher captions: BLEU-4, ROUGE-L, CIDEr (coco_metrics), length statistics against DenseFusion's
Table 1 (4V-100K split), and the prior-use score: the share of the image's OCR strings and
detected labels (its experts.json) that the caption mentions, DenseFusion's defining property."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Callable

from fusionweave.experts.captioners import TransformersCaptioner
from fusionweave.experts.engine_folder import engine_info
from fusionweave.experts.pixels import decode_rgb
from fusionweave.trainers.caption_engine.coco_metrics import caption_scores
from fusionweave.trainers.chat_template import IMAGE
from fusionweave.trainers.eve.data import read_rows
from fusionweave.trainers.shard_plan import shard_files
from fusionweave.transforms.caption_qc import stats, summary
from fusionweave.transforms.prompts import Priors

EVAL_FILE = "engine_eval.json"


def _norm(text: str) -> str:
    return " ".join(re.findall(r"\w+", text.lower()))


def mentions(caption: str, phrase: str) -> bool:
    """`phrase` in `caption` as whole words, case and punctuation ignored."""
    p = _norm(phrase)
    return bool(p) and f" {p} " in f" {_norm(caption)} "


def prior_use(caption: str, priors: Priors) -> dict[str, int]:
    ocr = list(dict.fromkeys(t for t, _ in priors.ocr if _norm(t)))
    labels = list(dict.fromkeys(str(d.get("label", "")) for d in priors.detections if _norm(str(d.get("label", "")))))
    return {"ocr": len(ocr), "ocr_used": sum(mentions(caption, t) for t in ocr),
            "labels": len(labels), "labels_used": sum(mentions(caption, x) for x in labels)}


def experts_by_key(paths: list[str | Path]) -> dict[str, Priors]:
    """Each sample's priors from shards holding experts.json (a perceive stage, or its input)."""
    from fusionweave.pipelines.storage.shard_source import iter_image_samples

    out: dict[str, Priors] = {}
    for url, n in shard_files(list(paths)):
        for s in iter_image_samples(url, n):
            if isinstance(s, dict) or "experts.json" not in s.members:
                continue
            try:
                out[s.key] = Priors.from_experts(json.loads(s.members["experts.json"]))
            except ValueError:
                continue
    return out


def build_experts(sft: Path) -> list[str]:
    """The shards a densefusion build read (build.json `inputs`), when `sft` is its teacher export."""
    build = Path(sft).resolve().parent.parent / "build.json"
    if not build.is_file():
        return []
    return list(json.loads(build.read_text()).get("inputs", {}).get("densefusion", []))


def load_examples(data: Path, image_root: Path, limit: int | None) -> list[dict[str, Any]]:
    """(id, image bytes, prompt, reference) of each usable row; a broken row is an error, not a skip:
    an eval on a silently smaller set is not the eval asked for."""
    out = []
    for i, row in enumerate(read_rows(Path(data), Path(image_root))[:limit]):
        r = row.data
        try:
            human, gpt = r["conversations"][0]["value"], r["conversations"][1]["value"]
            image = (row.root / r["image"]).read_bytes()
        except (TypeError, KeyError, IndexError, OSError) as err:
            raise ValueError(f"{data}: row {i} is not an evaluable LLaVA row ({type(err).__name__}: {err})") from None
        if human.count(IMAGE) != 1:
            raise ValueError(f"{data}: row {i} has {human.count(IMAGE)} <image> placeholders; one is needed")
        out.append({"id": str(r.get("id", i)), "image": image, "prompt": human.replace(IMAGE, "", 1).strip(),
                    "reference": gpt})
    if not out:
        raise ValueError(f"{data}: no rows to evaluate")
    return out


def generate(engine: Path, examples: list[dict[str, Any]], max_new_tokens: int, batch_size: int,
             prompt: Callable[[dict[str, Any]], str] = lambda e: e["prompt"],
             image: Callable[[dict[str, Any]], Any] = lambda e: decode_rgb(e["image"])) -> tuple[list[str], dict]:
    """Greedy captions of `examples` by the engine folder (as the build's captioner writes them)."""
    cap = TransformersCaptioner(str(engine), max_new_tokens=max_new_tokens)
    cap.check()
    cap.setup()
    try:
        out: list[str] = []
        for i in range(0, len(examples), batch_size):
            chunk = examples[i:i + batch_size]
            out += cap.generate([image(e) for e in chunk], [prompt(e) for e in chunk])[0]
        return out, cap.info()
    finally:
        cap.teardown()


def score(examples: list[dict[str, Any]], captions: list[str], priors: dict[str, Priors]) -> dict[str, Any]:
    use = [prior_use(c, priors[e["id"]]) for e, c in zip(examples, captions) if e["id"] in priors]
    tot = {k: sum(u[k] for u in use) for k in ("ocr", "ocr_used", "labels", "labels_used")}
    share = (lambda a, b: round(a / b, 4) if b else None)  # noqa: E731
    return {"n": len(examples), **caption_scores([[e["reference"]] for e in examples], captions),
            "lengths": summary([stats(c) for c in captions], "4V-100K"),
            "teacher_lengths": summary([stats(e["reference"]) for e in examples], "4V-100K"),
            "prior_use": {"score": share(tot["ocr_used"] + tot["labels_used"], tot["ocr"] + tot["labels"]),
                          "ocr": share(tot["ocr_used"], tot["ocr"]), "labels": share(tot["labels_used"], tot["labels"]),
                          "samples_with_priors": len(use), **{f"n_{k}": v for k, v in tot.items()}}}


def evaluate_engine(engine: Path, data: Path, image_root: Path, experts: list[str | Path] | None = None,
                    limit: int | None = None, max_new_tokens: int = 512, batch_size: int = 8,
                    run: Path | None = None) -> dict[str, Any]:
    """Score the engine; with `run` (its training folder) also append the result to metrics.jsonl."""
    examples = load_examples(data, image_root, limit)
    # a run's holdout.json came from the teacher SFT file its engine records: that build's inputs
    trained_on = (engine_info(engine) or {}).get("data")
    sources = list(experts) if experts else build_experts(data) or (build_experts(Path(trained_on)) if trained_on else [])
    priors = experts_by_key(sources) if sources else {}
    captions, info = generate(engine, examples, max_new_tokens, batch_size)
    result = {"engine": str(engine), "checkpoint": (info.get("engine") or {}).get("checkpoint"), "data": str(data),
              **score(examples, captions, priors),
              "samples": [{"id": e["id"], "caption": c, "reference": e["reference"]} for e, c in zip(examples, captions)]}
    if run is not None:
        (Path(run) / EVAL_FILE).write_text(json.dumps(result, indent=1))
        rows = [json.loads(x) for x in (Path(run) / "metrics.jsonl").read_text().splitlines() if x.strip()] \
            if (Path(run) / "metrics.jsonl").is_file() else []
        line = {"step": rows[-1]["step"] if rows else 0, "eval": "caption-engine",
                **{k: v for k, v in result.items() if k not in ("samples", "lengths", "teacher_lengths")},
                "words_mean": result["lengths"]["words"]["mean"]}
        with (Path(run) / "metrics.jsonl").open("a") as f:
            f.write(json.dumps(line) + "\n")
    return result
