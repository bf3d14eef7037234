"""`fusionweave view` and `fusionweave trace` on small build folders written here (no engine):
a DenseFusion-like build (download, validate, perceive, caption) with planted rejects and hostile
text, and an MCL-like build with all its media. Safety: 127.0.0.1 only, no path traversal,
escaped captions and OCR text. The browser tests (test_view_browser.py) reuse these builds."""
from __future__ import annotations

import http.client
import io
import json
import re
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image, ImageDraw

from fusionweave.pipelines.storage.shard_sink import REJECT_SCHEMA, write_shard
from tests.helpers import cli

HOSTILE_OCR = '<script>alert("ocr")</script>'
HOSTILE_CAPTION = 'A red <img src=x onerror=alert(1)> square, a dog and the sign "OPEN".'


def key(i: int) -> str:
    return f"{i:04d}" + "ab12cd34ef56ab12"  # 20 characters, like the pipelines' keys


def jpeg(i: int, size: tuple[int, int] = (320, 240)) -> bytes:
    img = Image.new("RGB", size, (40 * i % 256, 90, 160))
    ImageDraw.Draw(img).rectangle((20 + i, 30, 140, 160), fill=(250, 200, 20))
    buf = io.BytesIO()
    img.save(buf, "JPEG")
    return buf.getvalue()


def depth_png(w: int = 320, h: int = 240) -> bytes:
    arr = (np.linspace(0, 65535, w * h).reshape(h, w)).astype(np.uint16)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


def experts(i: int) -> dict:
    det = [{"label": "dog", "box": [0.1, 0.2, 0.5, 0.9], "score": 0.88, "source": "detector"},
           {"label": "square", "box": [0.05, 0.1, 0.45, 0.65], "score": 0.7, "source": "detector"}]
    ovd = [{"label": "sign", "box": [0.6, 0.1, 0.9, 0.3], "score": 0.5, "source": "ovd"}]
    ocr = [{"text": "OPEN", "box": [0.62, 0.12, 0.8, 0.2], "score": 0.99},
           {"text": HOSTILE_OCR, "box": [0.1, 0.7, 0.4, 0.8], "score": 0.9}]
    return {"schema": "fusionweave.experts/1", "image": {"width": 320, "height": 240},
            "experts": {"tagger": {"model": "tiny", "results": [{"tag": "dog", "score": 0.91}, {"tag": "red", "score": 0.4}],
                                   "error": None},
                        "detector": {"model": "yolo", "results": det[: 1 + i % 2], "error": None},
                        "ovd": {"model": "owl", "results": ovd, "error": None},
                        "ocr": {"model": "rapidocr", "results": ocr, "error": None},
                        "depth": {"model": "depth", "error": None,
                                  "results": {"member": "depth.png", "raw_min": 0.1, "raw_max": 9.7,
                                              "larger_is_nearer": True, "objects": []}}}}


def stage(out: Path, name: str, shards: list[list[dict]], rejects: list[dict], steps: dict[str, dict],
          rows_in: int) -> None:
    """A finished stage folder as the pipelines write it: shards, manifest, rejects, _stats.json."""
    d = out / name
    d.mkdir(parents=True)
    lines = []
    for n, samples in enumerate(shards):
        shard = "/".join(filter(None, [samples[0].pop("_sub", None) if samples else None, f"shard-{n:06d}.tar"]))
        (d / shard).parent.mkdir(parents=True, exist_ok=True)
        info = write_shard(d / shard, samples)
        lines.append({"part": f"{n:06d}", "rows_in": len(samples), "rejected": 0, "inputs": [], "shard": shard,
                      "count": info["count"], "bytes": info["bytes"], "sha256": info["sha256"], "rejects": None,
                      "stats": {}})
    if rejects:
        (d / "_rejects").mkdir()
        rows = [{"stage": name, "detail": None, "url": None, **r} for r in rejects]
        pq.write_table(pa.Table.from_pylist(rows, schema=REJECT_SCHEMA), d / "_rejects" / "part-000000.parquet")
        lines.append({"part": "rejects", "rows_in": len(rejects), "rejected": len(rejects), "inputs": [], "shard": None,
                      "count": 0, "bytes": None, "sha256": None, "rejects": "_rejects/part-000000.parquet", "stats": {}})
    (d / "_manifest.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    by_reason: dict[str, int] = {}
    for r in rejects:
        by_reason[r["reason"]] = by_reason.get(r["reason"], 0) + 1
    rows_out = sum(len(s) for s in shards)
    assert rows_in == rows_out + len(rejects)
    (d / "_stats.json").write_text(json.dumps({
        "stage": name, "rows_in": rows_in, "rows_out": rows_out, "rejected": len(rejects), "balanced": True,
        "rejects_by_reason": by_reason, "steps": steps, "shards": len(shards), "bytes": 0, "seconds": 0.1}))


def step(rows_in: int, rows_out: int, **rejects: int) -> dict:
    return {"rows_in": rows_in, "rows_out": rows_out, "rejects": rejects, "seconds": 0.0}


def make_densefusion_build(out: Path) -> dict:
    """download (8) -> validate (6 kept; a near duplicate of key(1), a too-small image) ->
    perceive (6, experts and depth) -> caption (5; one QC refusal)."""
    from fusionweave.orchestration.report import write as write_report

    out.mkdir(parents=True)
    keys = [key(i) for i in range(8)]
    dup, small = keys[6], keys[7]
    images = {k: jpeg(i) for i, k in enumerate(keys)}
    images[dup] = images[keys[1]]
    images[small] = jpeg(7, (40, 30))

    def base(k: str, **extra: object) -> dict:
        i = keys.index(k)
        return {"__key__": k, "jpg": images[k], "txt": f"alt text {i}",
                "json": {"key": k, "url": f"http://example.test/{i}.jpg", "width": 320, "height": 240,
                         "source": {"source": "laion.parquet#" + str(i), "similarity": 0.3}, **extra}}

    stage(out, "download", [[base(k) for k in keys[:4]], [base(k) for k in keys[4:]]], [],
          {"img2dataset": step(8, 8)}, 8)
    kept = keys[:6]
    stage(out, "validate", [[base(k, phash="0f0f0f0f0f0f0f0f") for k in kept]],
          [{"key": dup, "step": "near_dedup", "reason": "near_duplicate", "detail": f"duplicate of {keys[1]}",
            "url": "http://example.test/6.jpg"},
           {"key": small, "step": "decode_validate", "reason": "short_edge_too_small", "detail": "40x30",
            "url": "http://example.test/7.jpg"}],
          {"decode_validate": step(8, 7, short_edge_too_small=1), "near_dedup": step(7, 6, near_duplicate=1)}, 8)
    stage(out, "perceive", [[{**base(k, phash="0f0f0f0f0f0f0f0f"), "experts.json": experts(i), "depth.png": depth_png()}
                             for i, k in enumerate(kept)]], [],
          {"tagger": step(6, 6), "detector": step(6, 6), "ovd": step(6, 6), "ocr": step(6, 6), "depth": step(6, 6)}, 6)
    captions = {k: {**base(k), "txt": HOSTILE_CAPTION,
                    "json": {"alt_text": f"alt text {i}", "captioner": {"model": "priors-template"},
                             "qc": {"flags": ["short"], "reject": None}}} for i, k in enumerate(kept[:5])}
    stage(out, "caption", [list(captions.values())],
          [{"key": kept[5], "step": "caption_qc", "reason": "qc_repetition", "detail": "repeats 'dog' 9 times"}],
          {"caption": step(6, 6), "caption_qc": step(6, 5, qc_repetition=1)}, 6)
    (out / "build.json").write_text(json.dumps({"outputs": {
        "curate": {"sequence": 0, "stages": ["download", "validate"], "final": "validate"},
        "perceive": {"sequence": 1, "stages": ["perceive"], "final": "perceive"},
        "densefusion": {"sequence": 2, "stages": ["caption"], "final": "caption"}}}))
    write_report(out, ["download", "validate", "perceive", "caption"])
    return {"out": out, "kept": kept, "dup": dup, "dup_of": keys[1], "small": small, "qc_rejected": kept[5],
            "captioned": kept[:5]}


def points() -> bytes:
    rng = np.random.default_rng(0)
    xyz = rng.normal(size=(512, 3)).astype(np.float32)
    xyz /= np.linalg.norm(xyz, axis=1, keepdims=True)
    buf = io.BytesIO()
    np.save(buf, np.concatenate([xyz, np.full((512, 3), 0.5, np.float32)], axis=1))
    return buf.getvalue()


def fbank() -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.random.default_rng(1).normal(size=(2, 100, 128)).astype(np.float32))
    return buf.getvalue()


def make_mcl_build(out: Path) -> dict:
    out.mkdir(parents=True)
    k = {m: f"{m[:4]}0000000000000000"[:20] for m in ("video", "audio", "pointcloud", "depth")}

    def meta(m: str, q: str, answers: list[str]) -> dict:
        return {"key": k[m], "modality": m, "split": "train", "task": "qa", "question": q, "answers": answers,
                "source": f"{m}_src"}

    shards = [
        [{"_sub": "video/train/msrvtt", "__key__": k["video"], **{f"f{i}.jpg": jpeg(i) for i in range(4)},
          "json": meta("video", "what moves?", ["a square"]), "src.jsonl": '{"video_id": "v1", "q": "what moves?"}\n'}],
        [{"_sub": "audio/train/audiocaps", "__key__": k["audio"], "fbank.npy": fbank(),
          "json": meta("audio", "what is heard?", ["a tone"])}],
        [{"_sub": "pointcloud/train/cap3d", "__key__": k["pointcloud"], "npy": points(),
          "json": meta("pointcloud", "what shape?", ["a sphere"])}],
        [{"_sub": "depth/train/llava_depth", "__key__": k["depth"], "jpg": jpeg(3), "depth.png": depth_png(),
          "json": meta("depth", "is it near?", ["yes"])}],
    ]
    stage(out, "mcl", shards, [{"key": "bad0000000000000000a", "step": "preprocess", "reason": "audio_empty",
                                "detail": "silence.wav: zero-length audio"}],
          {"parse": step(5, 5), "preprocess": step(5, 4, audio_empty=1)}, 5)
    (out / "build.json").write_text(json.dumps({"outputs": {"mcl": {"sequence": 0, "stages": ["mcl"], "final": "mcl"}}}))
    return {"out": out, "keys": k}


@pytest.fixture(scope="module")
def df(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return make_densefusion_build(tmp_path_factory.mktemp("view") / "df")


@pytest.fixture(scope="module")
def mcl(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return make_mcl_build(tmp_path_factory.mktemp("view") / "mcl")


@pytest.fixture(scope="module")
def client(df: dict):
    from fusionweave.datasets_cards.view.reader import open_build
    from fusionweave.datasets_cards.view.server import create_app

    return create_app(open_build(df["out"])).test_client()


# ---------------------------------------------------------------- trace
def test_trace_kept_sample_lists_every_stage(df: dict) -> None:
    from fusionweave.datasets_cards.view.reader import open_build
    from fusionweave.datasets_cards.view.trace import trace

    t = trace(open_build(df["out"]), df["captioned"][0])
    assert [s["stage"] for s in t["stages"]] == ["download", "validate", "perceive", "caption"]
    assert all(s["status"] == "kept" for s in t["stages"]) and t["rejected"] is None
    assert t["stages"][1]["passed"] == ["decode_validate", "near_dedup"]
    assert t["stages"][1]["values"]["phash"] == "0f0f0f0f0f0f0f0f"
    assert t["experts"]["ocr"]["text"] == ["OPEN", HOSTILE_OCR] and t["experts"]["detector"]["boxes"] == 1
    assert t["caption"] == HOSTILE_CAPTION
    assert t["source"]["url"] == "http://example.test/0.jpg"


def test_trace_rejects_name_step_reason_and_value(df: dict) -> None:
    from fusionweave.datasets_cards.view.reader import open_build
    from fusionweave.datasets_cards.view.trace import trace

    view = open_build(df["out"])
    t = trace(view, df["dup"])
    v = t["stages"][1]
    assert (v["status"], v["step"], v["reason"]) == ("rejected", "near_dedup", "near_duplicate")
    assert v["passed"] == ["decode_validate"] and v["tested"]["compared_to"] == df["dup_of"]
    assert v["tested"]["phash_distance"] >= 0  # recomputed from the downloaded bytes against the kept pHash
    assert [s["status"] for s in t["stages"]] == ["kept", "rejected", "not reached", "not reached"]
    t = trace(view, df["qc_rejected"])
    assert t["rejected"]["stage"] == "caption" and t["rejected"]["step"] == "caption_qc"
    assert t["stages"][3]["passed"] == ["caption"] and t["stages"][2]["status"] == "kept"


def test_trace_cli_text_json_and_unknown_key(df: dict, capsys: pytest.CaptureFixture) -> None:
    from fusionweave.orchestration.cli import main

    out = str(df["out"])
    r = cli("trace", out, df["small"])  # the console script, in its own process
    assert r.returncode == 0, r.stderr
    assert "stage validate: rejected by step decode_validate, reason short_edge_too_small" in r.stdout
    assert "detail: 40x30" in r.stdout
    capsys.readouterr()
    assert main(["trace", out, df["kept"][2], "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["last_stage"] == "caption"
    assert main(["trace", out, df["kept"][2][:-1] + "Z"]) == 1
    err = capsys.readouterr().err
    assert "is not in this build" in err and df["kept"][2] in err and "Traceback" not in err


@pytest.mark.parametrize("what", ["missing", "file", "empty", "other"])
def test_bad_out_is_one_line_and_nonzero(tmp_path: Path, what: str, capsys: pytest.CaptureFixture) -> None:
    bad = tmp_path / "x"
    if what == "file":
        bad.write_text("hi")
    elif what == "empty":
        bad.mkdir()
    elif what == "other":
        (bad / "stuff").mkdir(parents=True)
        (bad / "stuff" / "a.txt").write_text("x")
    from fusionweave.orchestration.cli import main

    for args in (["trace", str(bad), "abc"], ["view", str(bad), "--static", str(tmp_path / "site")]):
        assert main(args) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1 and str(bad) in err, err
    if what == "missing":  # and the same from the console script, in its own process
        r = cli("view", str(bad))
        assert r.returncode == 2 and r.stderr.strip() == f"fusionweave: {bad}: no such folder", r.stderr


def test_trace_mcl_sample_and_reject(mcl: dict) -> None:
    from fusionweave.datasets_cards.view.reader import open_build
    from fusionweave.datasets_cards.view.trace import trace

    view = open_build(mcl["out"])
    t = trace(view, mcl["keys"]["video"])
    assert t["source"]["rows"] == [{"video_id": "v1", "q": "what moves?"}]
    assert t["stages"][0]["values"]["question"] == "what moves?"
    t = trace(view, "bad0000000000000000a")
    assert t["rejected"]["reason"] == "audio_empty" and t["stages"][0]["passed"] == ["parse"]


# ---------------------------------------------------------------- pages
def test_funnel_counts_match_report(df: dict, client) -> None:
    html = client.get("/").get_data(as_text=True)
    report = json.loads((df["out"] / "report.json").read_text())
    rows = re.findall(r'<tr class="stage" data-stage="([^"]+)" data-rows-in="(\d+)" data-rows-out="(\d+)" '
                      r'data-rejected="(\d+)"', html)
    assert {s: (int(a), int(b), int(c)) for s, a, b, c in rows} == \
        {s: (v["rows_in"], v["rows_out"], v["rejected"]) for s, v in report.items()}
    assert client.get("/charts/funnel.svg").data.startswith(b"<?xml")
    assert client.get("/charts/rejects-validate.svg").status_code == 200


def test_near_duplicate_page_shows_both_images(df: dict, client) -> None:
    html = client.get("/rejects/validate/near_duplicate.html").get_data(as_text=True)
    # the rejected copy from the stage that still holds its bytes, beside the image it duplicates
    assert f"thumb/download/{df['dup']}.jpg" in html and re.search(rf"thumb/\w+/{df['dup_of']}\.jpg", html)
    assert client.get(f"/thumb/download/{df['dup']}.jpg").data[:2] == b"\xff\xd8"


def test_sample_page_boxes_depth_tags_and_escaping(df: dict, client) -> None:
    k = df["captioned"][1]
    html = client.get(f"/sample/caption/{k}.html").get_data(as_text=True)
    ex = experts(1)["experts"]
    assert html.count('<rect class="box ') == sum(len(ex[n]["results"]) for n in ("detector", "ovd", "ocr"))
    assert f"derived/perceive/{k}.depth.png" in html  # the caption stage shows its upstream depth map
    assert client.get(f"/derived/perceive/{k}.depth.png").data[:4] == b"\x89PNG"
    # hostile text is escaped wherever it appears: OCR list, box titles, json, caption
    assert "<script>alert" not in html and "&lt;script&gt;alert(&#34;ocr&#34;)&lt;/script&gt;" in html
    assert "<img src=x" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    assert '<mark class="prior prior-tag">dog</mark>' in html and '<mark class="prior prior-ocr">OPEN</mark>' in html
    assert 'id="tags"' in html and 'flags: short' in html
    prompt = re.search(r'<pre id="prompt">(.*?)</pre>', html, re.S).group(1)
    assert "dog | red" in prompt and "alt text 1" in prompt and "&lt;script&gt;" in prompt


def test_samples_pages_and_filters(df: dict, client) -> None:
    html = client.get("/samples/perceive/1.html").get_data(as_text=True)
    assert html.count('class="card"') == 6
    html = client.get("/samples/perceive/1.html?ocr=open&tag=dog").get_data(as_text=True)
    assert html.count('class="card"') == 6
    assert client.get("/samples/perceive/1.html?tag=cat").get_data(as_text=True).count('class="card"') == 0
    html = client.get("/samples/caption/1.html?words=red+square").get_data(as_text=True)
    assert html.count('class="card"') == 5
    assert client.get("/samples/perceive/9.html").status_code == 404


TRAVERSALS = [
    "/media/validate/../../build.json", "/media/..%2F..%2Fbuild.json/x", "/media/validate/..%2F..%2Fbuild.json",
    "/media/validate/%2e%2e%2f%2e%2e%2fbuild.json", "/media/%2e%2e/build.json", "/media/validate/....%2f..%2fbuild.json",
    "/sample/validate/..%2F..%2Fbuild.html", "/sample/..%2F../x.html", "/thumb/validate/..%2Fx.jpg",
    "/derived/perceive/..%2F..%2Fbuild.depth.png", "/trace/..%2F..%2Fbuild.html", "/rejects/validate/..%2F_stats.html",
    "/media/validate/_stats.json", "/media/_rejects/part-000000.parquet", "/media/validate/shard-000000.tar",
    "/charts/rejects-..%2F..%2Fx.svg", "/samples/..%2Fvalidate/1.html", "//etc/passwd", "/media/validate//etc/passwd",
]


def test_path_traversal_cannot_read_outside_out(df: dict, client) -> None:
    secret = df["out"].parent / "secret.txt"
    secret.write_text("TOP SECRET")
    for url in TRAVERSALS + ["/media/validate/..%2Fsecret.txt", "/media/validate/..%2F..%2Fsecret.txt"]:
        r = client.get(url)
        assert r.status_code == 404, url
        assert b"TOP SECRET" not in r.data and b'"outputs"' not in r.data, url


def test_server_binds_127_0_0_1_only_and_refuses_traversal_over_http(df: dict) -> None:
    import threading

    from fusionweave.datasets_cards.view.reader import open_build
    from fusionweave.datasets_cards.view.server import make

    srv = make(open_build(df["out"]), port=0)
    assert srv.server_address[0] == "127.0.0.1" and srv.socket.getsockname()[0] == "127.0.0.1"
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        for url in TRAVERSALS:  # raw paths: http.client does not normalise them
            conn = http.client.HTTPConnection("127.0.0.1", srv.server_port, timeout=10)
            conn.request("GET", url)
            resp = conn.getresponse()
            body = resp.read()
            assert resp.status in (404, 400), (url, resp.status)
            assert b'"outputs"' not in body
            conn.close()
        conn = http.client.HTTPConnection("127.0.0.1", srv.server_port, timeout=10)
        conn.request("GET", "/index.html")
        assert conn.getresponse().status == 200
    finally:
        srv.shutdown()
        srv.server_close()
    from fusionweave.datasets_cards.view.commands import HOST

    assert HOST == "127.0.0.1"
    r = cli("view", "--help")
    assert "--host" not in r.stdout and "127.0.0.1" in r.stdout


def test_mcl_pages(mcl: dict) -> None:
    from fusionweave.datasets_cards.view.reader import open_build
    from fusionweave.datasets_cards.view.server import create_app

    c = create_app(open_build(mcl["out"])).test_client()
    k = mcl["keys"]
    html = c.get(f"/sample/mcl/{k['video']}.html").get_data(as_text=True)
    assert html.count('class="frame"') == 4 and "what moves?" in html
    html = c.get(f"/sample/mcl/{k['audio']}.html").get_data(as_text=True)
    assert 'id="spectrogram"' in html and c.get(f"/derived/mcl/{k['audio']}.fbank.png").data[:4] == b"\x89PNG"
    html = c.get(f"/sample/mcl/{k['pointcloud']}.html").get_data(as_text=True)
    assert html.count('class="view3d"') == 8 and 'id="azimuth"' in html
    assert c.get(f"/derived/mcl/{k['pointcloud']}.points-90.png").data[:4] == b"\x89PNG"
    assert c.get(f"/derived/mcl/{k['pointcloud']}.points-91.png").status_code == 404
    html = c.get(f"/sample/mcl/{k['depth']}.html").get_data(as_text=True)
    assert 'id="image"' in html and 'id="depth"' in html


def test_static_site_links_resolve_on_disk(df: dict, tmp_path: Path) -> None:
    site = tmp_path / "site"
    r = cli("view", str(df["out"]), "--static", str(site))
    assert r.returncode == 0, r.stderr
    pages = sorted(site.rglob("*.html"))
    assert (site / "index.html").is_file() and len(pages) >= 1 + 4 + 6
    for page in pages:
        html = page.read_text()
        assert 'id="filters"' not in html  # no server-side filters in a static site
        for link in re.findall(r'(?:href|src)="([^"#]+)"', html):
            assert not link.startswith(("/", "http")), (page, link)  # relative: works from file://
            assert (page.parent / link).resolve().is_file(), (page, link)
    # the site is written again over itself, but never into a folder that holds something else
    from fusionweave.orchestration.cli import main

    other = tmp_path / "other"
    (other / "keep.txt").parent.mkdir()
    (other / "keep.txt").write_text("x")
    assert main(["view", str(df["out"]), "--static", str(other)]) == 2 and (other / "keep.txt").exists()
    assert main(["view", str(df["out"]), "--static", str(site), "--limit", "2"]) == 0
    assert (site / "samples" / "perceive" / "1.html").read_text().count('class="card"') == 2


def test_reader_uses_offsets_not_unpacking(df: dict) -> None:
    from fusionweave.datasets_cards.view.reader import open_build, tar_index

    view = open_build(df["out"])
    shard = view.shards("perceive")[0][0]
    idx = tar_index(shard)
    m = idx[df["kept"][0]]["jpg"]
    with tarfile.open(shard) as tf:
        member = tf.getmember(f"{df['kept'][0]}.jpg")
        assert (m.offset, m.size) == (member.offset_data, member.size)
    assert view.member("perceive", df["kept"][0], "jpg")[:2] == b"\xff\xd8"
    assert view.member("perceive", "../../build", "json") is None


def test_port_in_use_is_one_line(df: dict, capsys: pytest.CaptureFixture) -> None:
    import socket

    from fusionweave.orchestration.cli import main

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        assert main(["view", str(df["out"]), "--port", str(s.getsockname()[1])]) == 2
    err = capsys.readouterr().err
    assert "is in use" in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
