"""Captioning stages: `caption` (the pivot MLLM, engine prompt, every sample) and `teacher` (the
teacher model, teacher prompt, a seeded sample: DenseFusion-4V-100K's seed set).

CPU tasks read each shard and build the prompt from the sample's `experts.json` and alt-text
(fitted to the token budget); the captioner runs as an actor pool; a worker finishes each part
(see `model_parts`): caption QC through the step chain, then the shard: the image, `txt` (the caption) and `json` (image_id, url,
alt-text, priors summary, captioner and settings, QC). A failed request and a caption QC rejects
are rejects with their reason; nothing is dropped silently.
"""
from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fusionweave.experts.captioners import CAPTION, ERROR, FINISH, Captioner
from fusionweave.experts.pixels import error_text
from fusionweave.pipelines.storage.build_folder import PartEntry, StageFolder
from fusionweave.pipelines.engine import Batch
from fusionweave.pipelines.image_reader import gather, image_part_reader
from fusionweave.pipelines.runner import ModelWork, PartResult, Stage
from fusionweave.pipelines.storage.shard_sink import rejects_table, shard_name
from fusionweave.pipelines.storage.shard_source import READ_SHARD, ImageSample, iter_image_samples
from fusionweave.transforms.caption_qc import CaptionFailed, CaptionQc, QcPolicy, summary
from fusionweave.transforms.prompts import Priors, Template, fit, priors_json
from fusionweave.transforms.step import REJECT_STEP, StepChain
from fusionweave.transforms.image_validate import open_image

# what the caption checks see of each sample
CHECKED = pa.schema([("key", pa.string()), ("url", pa.string()), ("error", pa.string()), ("caption", pa.string()),
                     ("finish_reason", pa.string()), ("j", pa.int64())])
SFT_PROMPT = "engine_prompt"


def alt_text(s: ImageSample) -> str:
    if "txt" in s.members:
        return s.members["txt"].decode("utf-8", "replace").strip()
    return str(s.meta.get("caption") or "").strip()


def experts_of(s: ImageSample) -> dict[str, Any] | None:
    raw = s.members.get("experts.json")
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None  # unreadable priors: caption from the image and alt-text alone


def make_to_batch(template: Template, budget: int | None, wanted: set[str] | None,
                  sft_template: Template | None = None):  # noqa: ANN201 - shipped to the workers
    """`sft_template`: also build the engine prompt, which the teacher's SFT export pairs with the
    teacher's caption (the pivot learns to answer the prompt it will be given)."""
    def to_batch(items: list[ImageSample], bad: list[dict[str, Any]]) -> Batch | None:
        rows = []
        for s in items:
            if wanted is not None and s.key not in wanted:
                continue
            err = header_error(s.members[s.image_ext])
            if err:
                bad.append({"key": s.key, "step": READ_SHARD, "reason": "undecodable", "detail": err,
                            "url": s.meta.get("url")})
            else:
                rows.append(s)
        if not rows:
            return None
        prompts, priors, sft = [], [], []
        for s in rows:
            found = Priors.from_experts(experts_of(s), alt_text(s))
            text, kept = fit(template, found, budget, with_image=False)
            prompts.append(text)
            priors.append(json.dumps(priors_json(kept)))
            if sft_template is not None:
                sft.append(fit(sft_template, found, budget, with_image=False)[0])
        batch = {"key": np.array([s.key for s in rows], dtype=object),
                 "idx": np.array([s.index for s in rows], np.int64),
                 "image": np.array([s.members[s.image_ext] for s in rows], dtype=object),
                 "prompt": np.array(prompts, dtype=object), "priors": np.array(priors, dtype=object)}
        if sft_template is not None:
            batch[SFT_PROMPT] = np.array(sft, dtype=object)
        return batch
    return to_batch


def header_error(data: bytes) -> str:
    """"" when the image's header reads (cheap; full decoding is the captioner's), else why not."""
    try:
        with open_image(data) as im:
            im.verify()
        return ""
    except Exception as err:  # noqa: BLE001 - any failure: this sample's reject
        return error_text(err)


def seed_keys(parts: list[dict[str, Any]], n: int, seed: int) -> set[str]:
    """A seeded random sample of n keys: the n smallest hashes of (seed, key), so it does not
    depend on shard order or on how the input is split."""
    scored = []
    for p in parts:
        for s in iter_image_samples(p["input"], p.get("expected")):
            if not isinstance(s, dict) and not header_error(s.members[s.image_ext]):
                scored.append((hashlib.sha256(f"{seed}:{s.key}".encode()).hexdigest(), s.key))
    return {k for _, k in sorted(scored)[:n]}


def finish_part(work: Path, stage: str, part: dict[str, Any], rows: Batch, captioner: Captioner,
                policy: QcPolicy, wanted: set[str] | None) -> PartResult:
    rec, rej, samples = gather(work, stage, part, rows)
    n = len(rows.get("key", ()))
    info = captioner.info()
    found = list(samples)
    table = pa.table({"key": [item.key for item, _ in found], "url": [item.meta.get("url") for item, _ in found],
                      "error": [rows[ERROR][j] if isinstance(rows[ERROR][j], str) else "" for _, j in found],
                      "caption": [str(rows[CAPTION][j]) for _, j in found],
                      "finish_reason": [str(rows[FINISH][j]) for _, j in found], "j": [j for _, j in found]},
                     schema=CHECKED)
    chain = StepChain([CaptionFailed(), CaptionQc(policy)])
    passed, refused, checked = chain(table)
    by_j = {j: item for item, j in found}
    kept: list[dict[str, Any]] = []
    qc_stats: list[dict[str, int]] = []
    flags: Counter = Counter()
    for j in (int(x) for x in passed.column("j").to_pylist()):
        item, url, caption = by_j[j], by_j[j].meta.get("url"), str(rows[CAPTION][j])
        qc = policy.check(caption, str(rows[FINISH][j]))
        flags.update(qc["flags"])
        qc_stats.append(qc["stats"])
        priors = json.loads(rows["priors"][j])
        meta = {"image_id": item.key, "url": url, "alt_text": priors["alt_text"],
                "priors": {"tags": len(priors["tags"]), "detections": len(priors["detections"]),
                           "ocr_lines": len(priors["ocr"]), "depth_objects": len(priors["depth"]),
                           "truncated": priors["notes"]},
                "captioner": info, "finish_reason": str(rows[FINISH][j]), "qc": qc}
        if SFT_PROMPT in rows:
            meta[SFT_PROMPT] = str(rows[SFT_PROMPT][j])
        kept.append({"__key__": item.key, item.image_ext: item.members[item.image_ext], "txt": caption,
                     "json": meta})
    rows_in = rec["rows_in"]
    if wanted is not None:
        # the teacher stage takes only its seed set (readable samples, chosen upfront): unread,
        # unchosen and broken samples belong to the caption stage's accounting, not to this one
        rows_in, rej = n, rej.slice(0, 0)
    # flags count every caption QC looked at, the ones it refused too
    qc_refused = refused.filter(pc.equal(refused.column(REJECT_STEP), CaptionQc.name))
    for text, finish in zip(qc_refused.column("caption").to_pylist(), qc_refused.column("finish_reason").to_pylist()):
        flags.update(policy.check(text, finish)["flags"])
    seconds = {READ_SHARD: rec["read_seconds"], **{k: v.seconds for k, v in checked.items()}}
    return PartResult(rows_in, [READ_SHARD, *(s.name for s in chain.steps)],
                      pa.concat_tables([rej, rejects_table(refused, stage)]), seconds, samples=kept or None,
                      name=shard_name(int(part["part"])), extra={"qc_stats": qc_stats, "qc_flags": dict(flags)})


def stage(name: str, out: Path, parts: list[dict[str, Any]], captioner: Captioner, template: Template,
          budget: int | None, policy: QcPolicy, chunk_size: int, read_cpus: float, wanted: set[str] | None = None,
          sft_template: Template | None = None) -> Stage:
    work = StageFolder(out, name).work
    reader = image_part_reader(work, name, chunk_size, make_to_batch(template, budget, wanted, sft_template))

    def finish(part: dict[str, Any], rows: Batch) -> PartResult:
        return finish_part(work, name, part, rows, captioner, policy, wanted)

    def info(entries: dict[str, PartEntry]) -> dict[str, Any]:
        all_stats = [s for e in entries.values() for s in e.extra.pop("qc_stats", [])]
        flags: Counter = Counter()
        for e in entries.values():
            flags.update(e.extra.pop("qc_flags", {}))
        got = {"captioner": captioner.info(), "caption_lengths": summary(all_stats, "1M" if name == "caption" else "4V-100K"),
               "qc_flags": dict(sorted(flags.items())), "template_id": template_id(template)}
        if wanted is not None:
            got["reads"] = None  # a seeded sample of the input, not all of it
            got["seed_set"] = len(wanted)
        return got

    return Stage(name, plan=lambda: parts, model=ModelWork(reader, captioner, finish, read_cpus, drop=("image",)),
                 conclude=info)


def template_id(template: Template) -> str:
    """Which wording made the prompts (a hash of the template's text)."""
    return hashlib.sha256(json.dumps([template.instruction, template.sections]).encode()).hexdigest()[:16]
