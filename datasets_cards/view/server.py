"""The viewer: a Flask app over a BuildView. Every URL maps to a page or to bytes looked up by
stage, key and member in the build's indexes (never to a path), and every link is relative, so
the same pages are served on 127.0.0.1 or written as a static site (see static.py).

Pages: funnel (index), rejects of a reason, samples of a stage (paged), one sample, a key's trace,
clusters. Text from shards (captions, OCR, json) goes through Jinja's autoescape."""
from __future__ import annotations

import json
import posixpath
import re
from typing import Any

from flask import Flask, Response, abort, render_template, request
from markupsafe import Markup, escape
from werkzeug.serving import make_server

from fusionweave.datasets_cards.view import figures
from fusionweave.datasets_cards.view.commands import HOST
from fusionweave.datasets_cards.view.reader import EXT_RE, KEY_RE, BuildView, image_ext
from fusionweave.datasets_cards.view.trace import UnknownKey, trace

PAGE = 48
CLUSTER_SCAN = 20_000  # selected samples read for the clusters page
FILTER_SCAN = 50_000  # samples a filter looks through before it stops (and says so)
BOX_EXPERTS = ("detector", "ovd", "ocr")
MEDIA_TYPES = {"jpg": "image/jpeg", "jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp",
               "gif": "image/gif", "bmp": "image/bmp", "json": "application/json", "txt": "text/plain; charset=utf-8",
               "jsonl": "text/plain; charset=utf-8", "flac": "audio/flac", "mp4": "video/mp4", "svg": "image/svg+xml"}
FRAME = re.compile(r"^f(\d+)\.(jpg|png)$")


def rel(target: str) -> str:
    """`target` (an absolute app path) relative to the page being rendered."""
    here = request.path if request else "/"
    base = posixpath.dirname(here) or "/"
    return posixpath.relpath(target, base) if target != here else posixpath.basename(target) or "index.html"


def highlight(text: str, terms: list[tuple[str, str]]) -> Markup:
    """`text` escaped, with each prior (kind, term) it mentions wrapped in <mark class=prior-KIND>."""
    terms = sorted({(k, t) for k, t in terms if t and len(t.strip()) > 1}, key=lambda kt: -len(kt[1]))
    if not terms:
        return escape(text)
    kinds: dict[str, str] = {}
    for kind in ("ocr", "object", "tag"):  # a word that is both a tag and a label is shown as a tag
        kinds.update({t.lower(): k for k, t in terms if k == kind})
    pattern = re.compile("|".join(re.escape(t) for _, t in terms), re.IGNORECASE)
    out, pos = [], 0
    for m in pattern.finditer(text):
        out.append(escape(text[pos:m.start()]))
        out.append(Markup('<mark class="prior prior-{}">{}</mark>').format(kinds.get(m.group(0).lower(), "tag"),
                                                                           m.group(0)))
        pos = m.end()
    out.append(escape(text[pos:]))
    return Markup("").join(out)


def boxes_of(experts: dict[str, Any] | None) -> list[dict[str, Any]]:
    res = []
    for name in BOX_EXPERTS:
        e = ((experts or {}).get("experts") or {}).get(name) or {}
        for r in e.get("results") or []:
            box = r.get("box") if isinstance(r, dict) else None
            if isinstance(box, list) and len(box) == 4 and all(isinstance(v, (int, float)) for v in box):
                x1, y1, x2, y2 = (float(v) for v in box)
                res.append({"expert": name, "x": x1, "y": y1, "w": max(x2 - x1, 0.002), "h": max(y2 - y1, 0.002),
                            "label": r.get("label") if name != "ocr" else r.get("text"), "score": r.get("score")})
    return res


def priors_of(experts: dict[str, Any] | None) -> list[tuple[str, str]]:
    ex = (experts or {}).get("experts") or {}
    terms: list[tuple[str, str]] = []
    for r in (ex.get("tagger") or {}).get("results") or []:
        terms.append(("tag", str(r.get("tag", ""))))
    for name in ("detector", "ovd"):
        for r in (ex.get(name) or {}).get("results") or []:
            terms.append(("object", str(r.get("label", ""))))
    for r in (ex.get("ocr") or {}).get("results") or []:
        terms.append(("ocr", str(r.get("text", ""))))
    return terms


def create_app(view: BuildView, static_limit: int | None = None) -> Flask:
    """`static_limit`: the app renders pages for a static site (no query filters; samples pages
    only as far as that many samples)."""
    app = Flask(__name__)
    app.config["STATIC_LIMIT"] = static_limit
    stats = view.stats

    def stage_or_404(stage: str) -> str:
        if stage not in stats:
            abort(404)
        return stage

    def holder(key: str, ext_wanted: str | None = None) -> str | None:
        """The last tar stage holding `key` (with an image when asked)."""
        for stage in reversed(view.tar_stages):
            m = view.members(stage, key)
            if m and (ext_wanted is None or image_ext(m)):
                return stage
        return None

    @app.context_processor
    def helpers() -> dict[str, Any]:
        return {"rel": rel, "stages": view.stages, "tar_stages": view.tar_stages, "is_static": static_limit is not None,
                "out_name": view.out.name, "has_clusters": "select" in stats and "cluster" in stats}

    @app.after_request
    def headers(resp: Response) -> Response:
        resp.headers["X-Content-Type-Options"] = "nosniff"
        resp.headers["Content-Security-Policy"] = ("default-src 'self'; img-src 'self' data:; style-src 'self' "
                                                   "'unsafe-inline'; script-src 'self' 'unsafe-inline'; media-src 'self'")
        return resp

    @app.route("/")
    @app.route("/index.html")
    def funnel() -> str:
        report_path = view.out / "report.json"
        return render_template("funnel.html", stats=stats, has_report=report_path.is_file())

    @app.route("/charts/funnel.svg")
    def funnel_chart() -> Response:
        return Response(figures.funnel_svg(stats), mimetype="image/svg+xml")

    @app.route("/charts/rejects-<stage>.svg")
    def rejects_chart(stage: str) -> Response:
        stage_or_404(stage)
        return Response(figures.rejects_svg(stage, stats[stage].get("rejects_by_reason", {})), mimetype="image/svg+xml")

    @app.route("/rejects/<stage>/<reason>.html")
    def rejects(stage: str, reason: str) -> str:
        stage_or_404(stage)
        if reason not in stats[stage].get("rejects_by_reason", {}):
            abort(404)
        rows = view.rejects(stage, reason=reason, limit=60)
        items = []
        for r in rows:
            other = None
            detail = r.get("detail") or ""
            if m := re.search(r"duplicate of (\S+)", detail):
                other = m.group(1).rstrip(";),")
            items.append({**r, "thumb_stage": holder(r["key"], "image") if KEY_RE.match(r["key"] or "") else None,
                          "other": other, "other_stage": holder(other, "image") if other and KEY_RE.match(other) else None})
        return render_template("rejects.html", stage=stage, reason=reason, items=items,
                               total=stats[stage]["rejects_by_reason"][reason])

    @app.route("/samples/<stage>/<int:page>.html")
    def samples(stage: str, page: int) -> str:
        stage_or_404(stage)
        if view.kind(stage) != "tar":
            abort(404)
        total = view.count(stage)
        limit = total if static_limit is None else min(total, static_limit)
        pages = max(1, -(-limit // PAGE))
        if page < 1 or page > pages:
            abort(404)
        f = {k: (request.args.get(k) or "").strip() for k in ("cluster", "tag", "ocr", "words")} \
            if static_limit is None else {}
        scanned = None
        if any(f.values()):
            items, scanned = filtered(view, stage, f, (page - 1) * PAGE, PAGE)
            pages = page + (1 if len(items) == PAGE else 0)
        else:
            start = (page - 1) * PAGE
            items = view.page(stage, start, min(PAGE, limit - start))
        cards = [{"key": k, "image": image_ext(m) is not None, "members": sorted(m)} for k, m in items]
        return render_template("samples.html", stage=stage, page=page, pages=pages, cards=cards, total=total,
                               filters=f, query=request.query_string.decode() if f else "", scanned=scanned)

    @app.route("/sample/<stage>/<key>.html")
    def sample(stage: str, key: str) -> str:
        stage_or_404(stage)
        s = view.sample(stage, key)
        if s is None:
            abort(404)
        members = s["members"]
        experts = s["experts"] if isinstance(s["experts"], dict) else None
        meta = s["json"] if isinstance(s["json"], dict) else {}
        caption = s["txt"] if "captioner" in meta else None
        depth_stage = stage if "depth.png" in members else None
        # a caption stage keeps no experts.json nor depth map: its priors are the upstream stage's
        if caption is not None and experts is None:
            for up in reversed(view.tar_stages[:view.tar_stages.index(stage)]):
                u = view.sample(up, key)
                if u and isinstance(u["experts"], dict):
                    experts = u["experts"]
                    depth_stage = up if "depth.png" in u["members"] else None
                    break
        frames = sorted((int(m.group(1)), ext) for ext in members if (m := FRAME.match(ext)))
        try:
            tr = trace(view, key)
        except UnknownKey:
            tr = None
        tags = ((experts or {}).get("experts", {}).get("tagger") or {}).get("results") or []
        return render_template(
            "sample.html", stage=stage, key=key, s=s, meta=meta, image=image_ext(members) if not frames else None,
            boxes=boxes_of(experts), experts=experts, tags=tags, frames=[e for _, e in frames],
            depth_stage=depth_stage, fbank="fbank.npy" in members,
            points="npy" in members and meta.get("modality") == "pointcloud", azimuths=figures.AZIMUTHS,
            audio=next((e for e in ("flac", "wav", "mp3") if e in members), None),
            caption=highlight(caption, priors_of(experts)) if caption is not None else None,
            alt_text=s["txt"] if caption is None else meta.get("alt_text"),
            qc=meta.get("qc"),
            prompt=meta.get("prompt") or (fusion_prompt(view, experts, meta.get("alt_text") or "")
                                          if caption is not None and experts else None),
            meta_json=json.dumps(meta, indent=2, ensure_ascii=False),
            experts_json=json.dumps(experts, indent=2, ensure_ascii=False) if experts else None,
            trace=tr, expert_names=[n for n in BOX_EXPERTS if any(b["expert"] == n for b in boxes_of(experts))])

    @app.route("/trace/<key>.html")
    def trace_page(key: str) -> str:
        if not KEY_RE.match(key):
            abort(404)
        try:
            tr = trace(view, key)
        except UnknownKey as err:
            return render_template("unknown.html", key=key, suggestions=err.suggestions), 404  # type: ignore[return-value]
        return render_template("trace.html", key=key, trace=tr, image_stage=holder(key, "image"),
                               trace_json=json.dumps(tr, indent=2, default=str, ensure_ascii=False))

    @app.route("/clusters.html")
    def clusters() -> str:
        if "select" not in stats:
            abort(404)
        by_cluster: dict[Any, list[dict[str, Any]]] = {}
        scanned = 0
        for key, _ in view.iter_samples("select"):
            if scanned >= CLUSTER_SCAN:  # a large build: the first samples' clusters, said on the page
                break
            scanned += 1
            s = view.sample("select", key)
            sel = ((s or {}).get("json") or {}).get("select") or {}
            by_cluster.setdefault(sel.get("cluster"), []).append(
                {"key": key, "distance": sel.get("centroid_distance")})
        rows = view.rejects("select", reason="semantic_duplicate", limit=2000)
        cluster_of = view.column_of("cluster", "cluster", [r["key"] for r in rows]) if "cluster" in stats else {}
        dups: dict[Any, list[dict[str, Any]]] = {}
        for r in rows:
            m = re.search(r"cosine ([0-9.]+) with (\S+?)[;)]", r.get("detail") or "")
            dups.setdefault(cluster_of.get(r["key"]), []).append(
                {"key": r["key"], "cosine": m.group(1) if m else None, "with": m.group(2) if m else None,
                 "stage": holder(r["key"], "image")})
        return render_template("clusters.html", clusters=sorted(by_cluster.items(), key=lambda kv: str(kv[0]))[:200],
                               dups=dups, scanned=scanned, total=view.count("select"))

    @app.route("/media/<stage>/<name>")
    def media(stage: str, name: str) -> Response:
        stage_or_404(stage)
        key, _, ext = name.partition(".")
        if not KEY_RE.match(key) or not EXT_RE.match(ext):
            abort(404)
        raw = view.member(stage, key, ext)
        if raw is None:
            abort(404)
        mime = MEDIA_TYPES.get(ext.rsplit(".", 1)[-1], "application/octet-stream")
        return Response(raw, mimetype=mime)

    @app.route("/thumb/<stage>/<key>.jpg")
    def thumb(stage: str, key: str) -> Response:
        stage_or_404(stage)
        members = view.members(stage, key)
        ext = image_ext(members or {})
        if ext is None:
            abort(404)
        small = figures.thumbnail(view.member(stage, key, ext) or b"")
        if small is None:
            abort(404)
        return Response(small, mimetype="image/jpeg")

    @app.route("/derived/<stage>/<key>.<what>.png")
    def derived(stage: str, key: str, what: str) -> Response:
        stage_or_404(stage)
        if what == "depth":
            raw = view.member(stage, key, "depth.png")
            fn = figures.depth_png
        elif what == "fbank":
            raw = view.member(stage, key, "fbank.npy")
            fn = figures.fbank_png
        elif what.startswith("points-") and what[7:].isdigit() and int(what[7:]) in figures.AZIMUTHS:
            raw = view.member(stage, key, "npy")
            azim = int(what[7:])
            fn = lambda b: figures.points_png(b, azim)  # noqa: E731
        else:
            abort(404)
        if raw is None:
            abort(404)
        try:
            return Response(fn(raw), mimetype="image/png")
        except Exception:  # noqa: BLE001 - a member that does not decode: nothing to draw
            abort(404)

    return app


def fusion_prompt(view: BuildView, experts: dict[str, Any], alt_text: str) -> str | None:
    """The engine prompt the captioner was given, rebuilt the way the caption stage builds it
    (the stage keeps the priors' counts, not the prompt): the recorded template and token budget
    over this sample's experts.json and alt-text."""
    from pathlib import Path

    from fusionweave.transforms.prompts import DEFAULT_TEMPLATE, Priors, Template, fit

    cfg = (view.build.get("pipelines") or {}).get("densefusion") or {}
    path = cfg.get("template") or DEFAULT_TEMPLATE
    try:
        template = Template.load(path if Path(path).is_file() else DEFAULT_TEMPLATE, "engine")
        return fit(template, Priors.from_experts(experts, alt_text), cfg.get("token_budget"), with_image=False)[0]
    except Exception:  # noqa: BLE001 - a template or experts.json it cannot read: no prompt shown
        return None


def filtered(view: BuildView, stage: str, f: dict[str, str], start: int, n: int) -> tuple[list, int]:
    """Samples of a stage matching the filters (cluster, tag, OCR text, caption words), in order."""
    items: list = []
    seen = matched = 0
    words = [w.lower() for w in f.get("words", "").split()]
    for key, members in view.iter_samples(stage):
        if seen >= FILTER_SCAN:
            break
        seen += 1
        s = view.sample(stage, key) or {}
        meta = s.get("json") if isinstance(s.get("json"), dict) else {}
        ex = ((s.get("experts") or {}).get("experts") or {}) if isinstance(s.get("experts"), dict) else {}
        if f.get("cluster") and str((meta.get("select") or {}).get("cluster")) != f["cluster"]:
            continue
        if f.get("tag") and not any(f["tag"].lower() == str(t.get("tag", "")).lower()
                                    for t in (ex.get("tagger") or {}).get("results") or []):
            continue
        if f.get("ocr") and not any(f["ocr"].lower() in str(t.get("text", "")).lower()
                                    for t in (ex.get("ocr") or {}).get("results") or []):
            continue
        if words:
            text = ((s.get("txt") or "") + " " + str(meta.get("question", "")) + " " +
                    " ".join(map(str, meta.get("answers") or []))).lower()
            if not all(w in text for w in words):
                continue
        if matched >= start:
            items.append((key, members))
            if len(items) >= n:
                break
        matched += 1
    return items, seen


def make(view: BuildView, port: int = 8000) -> Any:
    """The WSGI server (werkzeug's, threaded) bound to 127.0.0.1 only."""
    import socket

    if port:  # werkzeug prints and exits on a port in use: say it in one line instead
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((HOST, port))
            except OSError as err:
                raise OSError(err.errno, f"port {port} on {HOST} is in use or not allowed ({err.strerror}); "
                                         "pick another with --port") from None
    return make_server(HOST, port, create_app(view), threaded=True)


def serve(view: BuildView, port: int = 8000) -> None:
    srv = make(view, port)
    print(f"serving {view.out} on http://{HOST}:{srv.server_port}/ (127.0.0.1 only); Ctrl-C stops", flush=True)
    try:
        srv.serve_forever()
    finally:
        srv.server_close()
