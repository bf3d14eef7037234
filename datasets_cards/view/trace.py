"""One sample's whole history in a build: its source row, each stage and step it passed with the
values recorded there, the experts' results, its caption, and where (step, reason, detail) it was
rejected. `fusionweave trace OUT KEY [--json]` prints it; the viewer's sample page shows it."""
from __future__ import annotations

import difflib
import json
import re
from pathlib import Path
from typing import Any

from fusionweave.datasets_cards.view.reader import BuildView, plain_row

DUP_OF = re.compile(r"duplicate of (\S+)")
COSINE = re.compile(r"cosine ([0-9.]+) with (\S+?)[;)]")
RANK = re.compile(r"rank (\d+) by (\w+) in cluster (\S+?);\s*top (\d+)")


class UnknownKey(LookupError):
    def __init__(self, key: str, suggestions: list[str]):
        self.key, self.suggestions = key, suggestions
        hint = f"; closest keys: {', '.join(suggestions)}" if suggestions else ""
        super().__init__(f"key {key!r} is not in this build{hint}")


def closest_keys(view: BuildView, key: str, n: int = 5) -> list[str]:
    keys = view.all_keys()
    near = difflib.get_close_matches(key, keys, n=n, cutoff=0.5)
    prefixed = sorted(k for k in keys if k.startswith(key[:6]) and k not in near) if len(key) >= 6 else []
    return (near + prefixed)[:n]


def tested_values(row: dict[str, Any]) -> dict[str, Any]:
    """What a reject's detail says was tested, as fields (the compared key, cosine, rank, ...)."""
    detail = row.get("detail") or ""
    found: dict[str, Any] = {}
    if m := DUP_OF.search(detail):
        found["compared_to"] = m.group(1)
    if m := COSINE.search(detail):
        found["cosine"] = float(m.group(1))
        found["nearest_earlier"] = m.group(2)
    if m := RANK.search(detail):
        found.update(rank=int(m.group(1)), rank_by=m.group(2), cluster=m.group(3), top=int(m.group(4)))
    return found


def phash_distance(view: BuildView, key: str, other: str) -> int | None:
    """Hamming distance of pHashes for a near-duplicate pair: the kept image's pHash as recorded
    in its json; the rejected one's recomputed from its downloaded bytes (it has no json)."""
    try:
        from fusionweave.transforms.image_validate import image_phash
    except ImportError:
        return None
    theirs = None
    for stage in view.tar_stages:
        s = view.sample(stage, other)
        if s and isinstance(s["json"], dict) and s["json"].get("phash"):
            theirs = int(s["json"]["phash"], 16)
            break
    if theirs is None:
        return None
    for stage in view.tar_stages:
        members = view.members(stage, key)
        if not members:
            continue
        for ext in ("jpg", "jpeg", "png", "webp", "gif", "bmp", "tiff", "avif", "bin"):
            raw = view.member(stage, key, ext) if ext in members else None
            if raw:
                ours = image_phash(raw)  # None: not decodable, no distance to show
                return None if ours is None else bin(ours ^ theirs).count("1")
    return None


def summarise_experts(experts: dict[str, Any] | None) -> dict[str, Any] | None:
    if not isinstance(experts, dict):
        return None
    res: dict[str, Any] = {}
    for name, e in (experts.get("experts") or {}).items():
        if not isinstance(e, dict):
            continue
        r = e.get("results")
        item: dict[str, Any] = {"model": e.get("model"), "error": e.get("error")}
        if name == "tagger" and isinstance(r, list):
            item["tags"] = [(t.get("tag"), t.get("score")) for t in r]
        elif name == "ocr" and isinstance(r, list):
            item["text"] = [t.get("text") for t in r]
        elif isinstance(r, list):
            item["boxes"] = len(r)
            item["labels"] = sorted({str(b.get("label")) for b in r})
        elif isinstance(r, dict):
            item.update({k: v for k, v in r.items() if k in ("raw_min", "raw_max", "larger_is_nearer")})
            item["objects"] = len(r.get("objects") or [])
        res[name] = item
    return res


def stage_values(sample: dict[str, Any]) -> dict[str, Any]:
    """What a kept sample's shard records at this stage (small fields only)."""
    meta = sample["json"] if isinstance(sample["json"], dict) else {}
    vals: dict[str, Any] = {}
    for k in ("width", "height", "format", "phash", "sha256", "select", "qc", "priors", "finish_reason",
              "modality", "split", "task", "source", "dataset", "question", "answers", "media_info"):
        if k in meta and not (k == "source" and isinstance(meta[k], dict)):
            vals[k] = meta[k]
    if isinstance(meta.get("captioner"), dict):
        vals["captioner"] = meta["captioner"].get("model")
    if sample["experts"] is not None:
        vals["experts"] = summarise_experts(sample["experts"])
    vals["members"] = sorted(sample["members"])
    return vals


def source_row(view: BuildView, key: str) -> dict[str, Any] | None:
    """The row it came from: a parquet stage's row (LAION metadata), else the `source` recorded
    in its json, else its annotation rows (`src.jsonl`, MCL), else its reject's url."""
    for stage in view.stages:
        if view.kind(stage) == "parquet" and (row := view.parquet_row(stage, key)) is not None and "url" in row:
            return {"from": f"{stage} (parquet)", **row}
    for stage in view.tar_stages:
        s = view.sample(stage, key)
        if s is None:
            continue
        meta = s["json"] if isinstance(s["json"], dict) else {}
        if s["src"]:
            return {"from": f"{stage} (src.jsonl)", "rows": s["src"]}
        if isinstance(meta.get("source"), dict) or meta.get("url"):
            return {"from": f"{stage} (json)", "url": meta.get("url"),
                    **(meta["source"] if isinstance(meta.get("source"), dict) else {})}
    for stage in view.stages:
        for r in view.rejects(stage, key=key, limit=1):
            row = input_row(view, r.get("url")) if r.get("url") else None
            if row is not None:
                return {"from": f"{row.pop('_file')} (input parquet)", **row}
            return {"from": f"{stage} (reject)", "url": r.get("url")}
    return None


def input_row(view: BuildView, url: str) -> dict[str, Any] | None:
    """The input parquet's row with this URL (a row the metadata stage dropped is in no shard),
    when build.json names an input that is still where it was."""
    import pyarrow.parquet as pq

    meta = ((view.build.get("pipelines") or {}).get("curate") or {}).get("metadata") or {}
    for name in meta.get("input") or []:
        for cand in (Path(name), view.out.parent / name, view.out.parent.parent / name, view.out / name):
            if not cand.is_file():
                continue
            try:
                cols = pq.read_schema(cand).names
                col = next((c for c in ("URL", "url") if c in cols), None)
                if col is None:
                    break
                t = pq.read_table(cand, filters=[(col, "=", url)])
            except Exception:  # noqa: BLE001 - an unreadable input just gives no row
                break
            if t.num_rows:
                return {"_file": cand.name, **plain_row(t)}
            break
    return None


def trace(view: BuildView, key: str) -> dict[str, Any]:
    stages: list[dict[str, Any]] = []
    seen = False
    for stage in view.stages:
        st = view.stats[stage]
        steps = list(st.get("steps", {}))
        rec: dict[str, Any] = {"stage": stage, "steps": steps}
        kind = view.kind(stage)
        rejected = view.rejects(stage, key=key)
        kept: dict[str, Any] | None = None
        if kind == "tar":
            s = view.sample(stage, key)
            if s is not None:
                kept = stage_values(s)
                if s["txt"] is not None:
                    kept["text"] = s["txt"]
        elif kind == "parquet":
            row = view.parquet_row(stage, key)
            if row is not None:
                kept = {k: v for k, v in row.items() if k != "key"}
        if kept is not None:
            rec.update(status="kept", passed=steps, values=kept)
            if rejected:  # other rows with the same key (a duplicate URL has its original's key)
                rec["rows_rejected"] = [{k: r.get(k) for k in ("step", "reason", "detail", "url")} for r in rejected]
        elif rejected:
            r = rejected[0]
            step = r.get("step")
            passed = steps[:steps.index(step)] if step in steps else []
            tested = tested_values(r)
            if r.get("reason") == "near_duplicate" and "compared_to" in tested:
                d = phash_distance(view, key, tested["compared_to"])
                if d is not None:
                    tested["phash_distance"] = d
            rec.update(status="rejected", passed=passed, step=step, reason=r.get("reason"),
                       detail=r.get("detail"), tested=tested, url=r.get("url"))
        elif kind == "none":
            rec.update(status="no shards", passed=[])
        else:
            rec.update(status="not reached", passed=[])
        seen = seen or rec["status"] in ("kept", "rejected")
        stages.append(rec)
    if not seen:
        raise UnknownKey(key, closest_keys(view, key))
    source = source_row(view, key)
    for r in stages:
        if r["status"] == "rejected" and "short_edge" in (r.get("reason") or "") and source:
            w = source.get("width", source.get("WIDTH"))
            h = source.get("height", source.get("HEIGHT"))
            if isinstance(w, (int, float)) and isinstance(h, (int, float)):
                r["tested"].setdefault("short_edge", int(min(w, h)))
        if r["status"] == "kept" and source and source.get("from") == f"{r['stage']} (parquet)":
            r["values"] = {"row": "the source row"}
    last_kept = next((r for r in reversed(stages) if r["status"] == "kept"), None)
    rejected_at = next((r for r in stages if r["status"] == "rejected"), None)
    caption = experts = None
    for r in reversed(stages):  # the latest caption and experts.json it got
        if r["status"] == "kept" and view.kind(r["stage"]) == "tar" and (caption is None or experts is None):
            s = view.sample(r["stage"], key) or {}
            meta = s.get("json") if isinstance(s.get("json"), dict) else {}
            if caption is None and "captioner" in meta:
                caption = s.get("txt")
            if experts is None and isinstance(s.get("experts"), dict):
                experts = s["experts"]
    return {
        "key": key,
        "source": source,
        "stages": stages,
        "experts": summarise_experts(experts),
        "caption": caption,
        "rejected": None if rejected_at is None else {k: rejected_at.get(k) for k in
                                                      ("stage", "step", "reason", "detail", "tested")},
        "last_stage": last_kept["stage"] if last_kept else None,
    }


def _short(v: Any, n: int = 160) -> str:
    s = v if isinstance(v, str) else json.dumps(v, ensure_ascii=False, default=str)
    return s if len(s) <= n else s[:n - 1] + "…"


def render_text(t: dict[str, Any]) -> str:
    lines = [f"key {t['key']}"]
    src = t["source"]
    if src:
        lines.append(f"source ({src.get('from')}):")
        for k, v in src.items():
            if k != "from" and v is not None:
                lines.append(f"    {k}: {_short(v)}")
    for r in t["stages"]:
        head = f"stage {r['stage']}: {r['status']}"
        if r["status"] == "rejected":
            head += f" by step {r['step']}, reason {r['reason']}"
        lines.append(head)
        if r.get("passed"):
            lines.append(f"    passed: {', '.join(r['passed'])}")
        if r["status"] == "rejected":
            if r.get("detail"):
                lines.append(f"    detail: {_short(r['detail'], 300)}")
            for k, v in (r.get("tested") or {}).items():
                lines.append(f"    {k}: {v}")
        for k, v in (r.get("values") or {}).items():
            if k not in ("experts", "text"):
                lines.append(f"    {k}: {_short(v)}")
        for x in r.get("rows_rejected") or []:
            lines.append(f"    another row with this key rejected by {x['step']}: {x['reason']}"
                         + (f" ({x['detail']})" if x.get("detail") else "") + (f" url {x['url']}" if x.get("url") else ""))
    if t["experts"]:
        lines.append("experts:")
        for name, e in t["experts"].items():
            rest = {k: v for k, v in e.items() if k not in ("model",) and v is not None}
            lines.append(f"    {name} ({e.get('model')}): {_short(rest, 300)}")
    if t["caption"]:
        lines.append("caption:")
        lines.append(f"    {t['caption']}")
    if t["rejected"]:
        r = t["rejected"]
        lines.append(f"rejected at {r['stage']}/{r['step']}: {r['reason']}" + (f" ({r['detail']})" if r["detail"] else ""))
    else:
        lines.append(f"kept through {t['last_stage']}")
    return "\n".join(lines)
