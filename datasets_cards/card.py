"""`fusionweave card OUT`: a dataset card written from what the build really did."""
from __future__ import annotations

import fnmatch
import json
from collections import Counter
from pathlib import Path
from typing import Any

import yaml
from huggingface_hub import DatasetCard, DatasetCardData

from fusionweave.datasets_cards import plots
from fusionweave.datasets_cards.config import CardConfig
from fusionweave.datasets_cards.hub_values import check, size_category
from fusionweave.datasets_cards.structure import caption_lengths_and_sizes, describe
from fusionweave.pipelines.storage import store
from fusionweave.pipelines.storage.build_folder import STATS
from fusionweave.pipelines.storage.location import Loc, ObjectPath, location

PLOTS = "_card"
LAION_TERMS = (
    "The images were selected from LAION metadata. LAION releases its metadata (URLs and alt-texts) under "
    "CC-BY 4.0; the images themselves stay the property of their owners and were fetched from their original "
    "URLs. This dataset is meant for research; honour takedown requests and the LAION terms of use. Downloads "
    "honoured X-Robots-Tag opt-outs ({directives}) and refused private and cloud-metadata addresses."
)
CITATIONS = {
    "densefusion": """@inproceedings{li2024densefusion,
  title={DenseFusion-1M: Merging Vision Experts for Comprehensive Multimodal Perception},
  author={Li, Xiaotong and Zhang, Fan and Diao, Haiwen and Wang, Yueze and Wang, Xinlong and Duan, Ling-Yu},
  booktitle={NeurIPS Datasets and Benchmarks},
  year={2024}
}""",
    "curate": """@inproceedings{schuhmann2022laion5b,
  title={LAION-5B: An open large-scale dataset for training next generation image-text models},
  author={Schuhmann, Christoph and others},
  booktitle={NeurIPS Datasets and Benchmarks},
  year={2022}
}""",
}


class CardError(ValueError):
    pass


def _stage_stats(out: Loc, stages: list[str]) -> dict[str, dict[str, Any]]:
    return {s: json.loads(store.read_text(out / s / STATS)) for s in stages if store.exists(out / s / STATS)}


def build_outputs(build: dict[str, Any]) -> list[tuple[str, list[str], str]]:
    """(pipeline, its stages, its final stage) for every pipeline recorded in build.json."""
    outputs = sorted(build.get("outputs", {}).items(), key=lambda kv: kv[1].get("sequence", 0))
    return [(name, o["stages"], o["final"]) for name, o in outputs]


def data_configs(out: Loc, name: str, final: str, only: bool) -> list[dict[str, Any]]:
    """One config per pipeline, its shards as the train split; shards kept per modality and split
    (mcl: MODALITY/SPLIT/SOURCE/shard-*.tar) give one config per modality with its own splits."""
    nested = sorted({p.relative_to(out / final).parts[:2] for p in store.glob(out / final, "*/*/*/shard-*.tar")})
    if not nested:
        return [{"config_name": "default" if only else name,
                 "data_files": [{"split": "train", "path": f"{final}/shard-*.tar"}]}]
    by_modality: dict[str, list[str]] = {}
    for modality, split in nested:
        by_modality.setdefault(modality, []).append(split)
    return [{"config_name": modality if only else f"{name}-{modality}",
             "data_files": [{"split": split, "path": f"{final}/{modality}/{split}/*/shard-*.tar"} for split in splits]}
            for modality, splits in by_modality.items()]


def render(out: str | Path | ObjectPath) -> Loc:
    """Write OUT/README.md (and OUT/_card/*.png). Raises CardError if the card does not validate."""
    out = location(out)
    build_path = out / "build.json"
    if not store.exists(build_path):
        raise CardError(f"{out} has no build.json: not a fusionweave build folder")
    build = json.loads(store.read_text(build_path))
    cfg = CardConfig.model_validate(build.get("card") or {})
    outputs = build_outputs(build)
    if not outputs:
        raise CardError(f"{build_path} records no finished pipeline outputs")
    stats_all: dict[str, dict[str, Any]] = {}
    configs, total, shards = [], 0, []
    for name, stages, final in outputs:
        stats_all.update(_stage_stats(out, stages))
        if final not in stats_all:
            raise CardError(f"{name}: final stage {final!r} has not finished; nothing to describe")
        total += stats_all[final]["rows_out"]
        shards += [out / final / r for r in sorted(store.files(out / final, recursive=True), key=lambda r: r.split("/"))
                   if fnmatch.fnmatchcase(r.rsplit("/", 1)[-1], "shard-*.tar")]
        configs += data_configs(out, name, final, len(outputs) == 1)
    pretty = cfg.pretty_name or f"{_name(out)} ({', '.join(n for n, _, _ in outputs)})"
    meta = DatasetCardData(
        pretty_name=pretty, license=cfg.license, language=cfg.language, task_categories=cfg.task_categories,
        size_categories=[size_category(total)], tags=cfg.tags, configs=configs,
    )
    meta_dict = meta.to_dict()
    problems = check(meta_dict)
    if problems:
        raise CardError("dataset card metadata does not validate:\n  " + "\n  ".join(problems))
    structure = describe(shards)
    words, sizes = caption_lengths_and_sizes(shards)
    rejects = Counter()
    for st in stats_all.values():
        rejects.update(st.get("rejects_by_reason", {}))
    figs = {
        "caption lengths": plots.caption_lengths(words, out / PLOTS / "caption_lengths.png"),
        "image sizes": plots.image_sizes(sizes, out / PLOTS / "image_sizes.png"),
        "rejects by reason": plots.rejects_by_reason(rejects, out / PLOTS / "rejects_by_reason.png"),
    }
    body = _body(out, build, cfg, outputs, stats_all, structure, words, figs, total)
    content = f"---\n{meta.to_yaml()}\n---\n{body}"
    card = DatasetCard(content)  # parses the YAML header back: a broken header raises here
    if card.data.to_dict() != meta_dict:
        raise CardError("the rendered card's metadata does not round-trip")
    path = out / "README.md"
    store.put_bytes(path, content.encode())
    return path


def _name(out: Loc) -> str:
    """The build folder's own name (a local one's after symlinks are followed)."""
    return (out.resolve() if isinstance(out, Path) else out).name


def _caption_notes(build: dict[str, Any], stats_all: dict[str, dict[str, Any]]) -> list[str]:
    """Who wrote the captions, said up front: template captions and tiny models are not data."""
    lines = []
    cap = stats_all.get("caption", {}).get("captioner")
    if cap and cap.get("kind") == "priors-template":
        lines += ["> **The captions are not model-written.** They were filled in from the experts' priors by "
                  "fusionweave's `priors-template` captioner (for offline demos); each starts with "
                  f"`{cap.get('note', '')}`. Configure a pivot MLLM (`densefusion.captioner`) for real captions.", ""]
    engine = (cap or {}).get("engine")
    if engine:
        lines += [f"Captions written by the fine-tuned caption engine `{cap.get('model')}`, checkpoint "
                  f"`{engine.get('checkpoint')}` ({engine.get('format')} weights over `{engine.get('base')}`, "
                  f"{engine.get('trained_by')}, step {engine.get('step')}, {engine.get('train_rows')} teacher "
                  "captions); each sample's `json` names it under `captioner.engine`.", ""]
    if build.get("demo_models"):
        lines += ["> **Tiny random models.** Some experts ran with tiny randomly initialised models "
                  f"({', '.join(build['demo_models'])}); their outputs mean nothing.", ""]
    lengths = stats_all.get("caption", {}).get("caption_lengths")
    if lengths and lengths.get("captions"):
        pub = lengths["published"]
        lines += ["Caption lengths (mean per caption) against DenseFusion-1M's Table 1: "
                  + ", ".join(f"{k} {lengths[k]['mean']:g} vs {pub[k]:g}" for k in ("words", "sentences", "chars"))
                  + ".", ""]
    return lines


def _mcl_section(m: dict[str, Any]) -> list[str]:
    lines = ["## Loading", "", "One config per modality; its splits are the official ones (`<split>_ood`: out-of-domain "
             "eval sets). The continual stages, their mixtures and eval sets are in `mcl_export/stages.json`.", "",
             "```python", "from datasets import load_dataset",
             "video = load_dataset(\"ORG/NAME\", \"video\", split=\"train\")", "```", "",
             "## MCL contents", "", "| modality | split | task | source | samples |", "|---|---|---|---|---|"]
    for modality, splits in m["counts"].items():
        for split, tasks in sorted(splits.items()):
            for task, sources in sorted(tasks.items()):
                lines += [f"| {modality} | {split} | {task} | {src} | {n:,} |" for src, n in sorted(sources.items())]
    lines += ["", "| modality | rejects by reason |", "|---|---|"]
    lines += [f"| {mo} | {', '.join(f'{r}: {n:,}' for r, n in rej.items()) or '-'} |" for mo, rej in m["rejects"].items()]
    lines += ["", "| modality | media statistic | mean | min | max |", "|---|---|---|---|---|"]
    lines += [f"| {mo} | {k} | {v['mean']:g} | {v['min']:g} | {v['max']:g} |"
              for mo, metrics in m["media"].items() for k, v in metrics.items()]
    return lines + [""]


def _body(out: Loc, build: dict[str, Any], cfg: CardConfig, outputs: list[tuple[str, list[str], str]],
          stats_all: dict[str, dict[str, Any]], structure: dict[str, Any], words: list[int],
          figs: dict[str, Path | None], total: int) -> str:
    names = ", ".join(n for n, _, _ in outputs)
    lines = [f"# {cfg.pretty_name or _name(out)}", ""]
    lines += [cfg.summary or (f"Built with fusionweave ({names}): {total:,} samples in WebDataset shards, "
                             "with every dropped row recorded with its reason."), ""]
    lines += _caption_notes(build, stats_all)
    mcl = next((st["mcl"] for st in stats_all.values() if "mcl" in st), None)
    if mcl is None:
        lines += ["## Loading", "", "```python", "from datasets import load_dataset",
                  "ds = load_dataset(\"ORG/NAME\", split=\"train\")  # or data_files={\"train\": \"" +
                  f"{outputs[-1][2]}/shard-*.tar\"}} on a local copy", "```", ""]
    else:
        lines += _mcl_section(mcl)
    lines += ["## Sample structure", "", f"Read from {structure['samples_read']} samples.", "",
              "| member | kind | present in |", "|---|---|---|"]
    for ext, m in structure["members"].items():
        lines.append(f"| `KEY.{ext}` | {m['kind']} | {m['present_in']} of {structure['samples_read']} |")
    for ext, fields in structure["json_fields"].items():
        lines += ["", f"Fields of `{ext}`:", "", "| field | type |", "|---|---|"]
        lines += [f"| `{k}` | {' or '.join(v)} |" for k, v in fields.items()]
    lines += ["", "## How it was built", ""]
    for name, stages, _ in outputs:
        lines += [f"Pipeline `{name}`, stages in order (each reads the previous one's output):", "",
                  "| stage | rows in | kept | rejected | shards |", "|---|---|---|---|---|"]
        for s in stages:
            if s in stats_all:
                st = stats_all[s]
                lines.append(f"| {s} | {st['rows_in']:,} | {st['rows_out']:,} | {st['rejected']:,} | {st['shards']} |")
        lines += ["", "Steps and their rejects:", "", "| stage | step | rows in | rows out | rejects by reason |",
                  "|---|---|---|---|---|"]
        for s in stages:
            for step, ss in stats_all.get(s, {}).get("steps", {}).items():
                rej = ", ".join(f"{r}: {n:,}" for r, n in ss["rejects"].items()) or "-"
                lines.append(f"| {s} | {step} | {ss['rows_in']:,} | {ss['rows_out']:,} | {rej} |")
        lines += ["", "Settings (thresholds and models) as resolved for this build:", "", "```yaml",
                  yaml.safe_dump(build.get("pipelines", {}).get(name, {}), sort_keys=False).strip(), "```", ""]
    models = build.get("models") or {}
    lines += ["Models: " + (", ".join(f"`{k}` {v}" for k, v in models.items()) if models else
                            "none (this build uses no learned model)"), ""]
    v = build.get("versions", {})
    lines += [f"Software: fusionweave {v.get('fusionweave')}, code revision `{build.get('code_revision')}`, "
              f"Ray {v.get('ray')}, img2dataset {v.get('img2dataset')}, webdataset {v.get('webdataset')}, "
              f"pyarrow {v.get('pyarrow')}; seed {build.get('seed')}.", ""]
    lines += ["## Statistics", ""]
    if words:
        words_sorted = sorted(words)
        lines.append(f"Captions: mean {sum(words) / len(words):.1f} words, median {words_sorted[len(words) // 2]} "
                     f"({len(words):,} samples).")
        lines.append("")
    for title, p in figs.items():
        if p is not None:
            lines += [f"![{title}]({PLOTS}/{p.name})", ""]
    lines += ["## Provenance and license", "", f"License of this dataset card and metadata: `{cfg.license}`.", ""]
    if "curate" in (n for n, _, _ in outputs):
        dl = build.get("pipelines", {}).get("curate", {}).get("download", {})
        lines += [LAION_TERMS.format(directives=", ".join(dl.get("disallowed_header_directives", [])) or "none"), ""]
    lines += ["Every dropped row is listed in its stage's `_rejects/*.parquet` (key, stage, step, reason, detail, url); "
              "every shard's sha256 and sample count are in its stage's `_manifest.jsonl`.", ""]
    cites = [cfg.citation] if cfg.citation else [CITATIONS[n] for n, _, _ in outputs if n in CITATIONS]
    if cites:
        lines += ["## Citation", "", "```bibtex", *cites, "```", ""]
    return "\n".join(lines)
