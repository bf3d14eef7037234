"""The densefusion build end to end: prompts from experts.json and alt-text, each captioner
(priors-template, transformers on a tiny LLaVA, openai against a loopback chat server backed by
that model), the teacher seed set and its SFT export, QC and failures as rejects, the
DenseFusion JSONL / LLaVA exports, and a kill mid-captioning resumed without paying twice."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from fusionweave.pipelines.storage.shard_sink import write_shard
from tests.chat_server import ChatServer
from tests.helpers import all_rejects, cli, kill_build_when, manifest_lines

pytestmark = pytest.mark.heavy


def jpeg(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (160, 120), (seed * 37 % 256, seed * 91 % 256, 120)).save(buf, "JPEG")
    return buf.getvalue()


def experts(i: int) -> dict:
    return {"schema": "fusionweave.experts/1", "experts": {
        "tagger": {"results": [{"tag": "dog", "score": 0.9}, {"tag": "park", "score": 0.5}], "error": None},
        "ocr": {"results": [{"text": f"SIGN {i}", "box": [0.1, 0.1, 0.2, 0.2], "score": 0.9}], "error": None}},
        "detections": [{"label": "dog", "box": [0.1, 0.2, 0.5, 0.9], "score": 0.8}]}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict:
    from fusionweave.experts.tiny_models import make_tiny_llava

    root = tmp_path_factory.mktemp("densefusion-data")
    folder = root / "perceive"
    folder.mkdir()
    n = 0
    for s in range(3):
        samples = []
        for i in range(4):
            k = f"s{s}-{i}"
            samples.append({"__key__": k, "jpg": jpeg(n), "txt": f"a dog in the park {n}",
                            "json": {"key": k, "url": f"http://example.test/{k}.jpg"}, "experts.json": experts(n)})
            n += 1
        write_shard(folder / f"in-{s}.tar", samples)
    buf = io.BytesIO()
    Image.fromarray((np.random.default_rng(0).random((240, 320, 3)) * 255).astype("uint8")).save(buf, "JPEG")
    good = buf.getvalue()
    write_shard(folder / "in-3.tar", [
        {"__key__": "corrupt", "jpg": b"\xff\xd8\xff garbage", "txt": "x", "json": {"url": "http://example.test/c.jpg"}},
        # the header reads, the pixels do not: only a captioner that looks at the image finds out
        {"__key__": "truncated", "jpg": good[: int(len(good) * 0.6)], "txt": "y", "json": {"url": "http://example.test/t.jpg"}}])
    return {"folder": folder, "n": n + 2, "good": n, "llava": make_tiny_llava(root / "llava")}


def recipe(data: dict, path: Path, captioner: dict, **extra: object) -> Path:
    cfg = {"input": [str(data["folder"])], "chunk_size": 2, "captioner": {"batch_size": 2, **captioner}, **extra}
    path.write_text(yaml.safe_dump({"seed": 0, "densefusion": cfg}))
    return path


def build(cfg: Path, out: Path) -> list[str]:
    return ["build", "densefusion", "--config", str(cfg), "--out", str(out), "--no-progress", "--num-cpus", "2"]


def shard_samples(out: Path, stage: str) -> dict[str, dict]:
    import webdataset as wds

    files = sorted(str(p) for p in (out / stage).glob("shard-*.tar"))
    return {s["__key__"]: s for s in wds.WebDataset(files, shardshuffle=False)} if files else {}


def test_priors_template_build_and_exports(data: dict, tmp_path: Path) -> None:
    out = tmp_path / "out"
    r = cli(*build(recipe(data, tmp_path / "d.yaml", {"kind": "priors-template"}), out))
    assert r.returncode == 0, r.stderr[-3000:]
    st = json.loads((out / "caption" / "_stats.json").read_text())
    assert st["balanced"] and st["rows_out"] == data["n"] - 1  # the template never decodes: only "corrupt" goes
    assert {x["key"]: x["reason"] for x in all_rejects(out, "caption").to_pylist()} == {"corrupt": "undecodable"}
    assert st["captioner"]["kind"] == "priors-template" and st["caption_lengths"]["published"]["words"] == 191
    samples = shard_samples(out, "caption")
    meta = json.loads(samples["s1-2"]["json"])
    caption = samples["s1-2"]["txt"].decode()
    assert caption.startswith("[priors-template caption") and '"SIGN 6"' in caption and "a dog in the park 6" in caption
    assert meta["image_id"] == "s1-2" and meta["url"] == "http://example.test/s1-2.jpg"
    assert meta["priors"] == {"tags": 2, "detections": 1, "ocr_lines": 1, "depth_objects": 0, "truncated": []}
    assert samples["s1-2"]["jpg"] == jpeg(6)  # the image travels unchanged
    # exports round-trip: the JSONL and LLaVA files say what the shards say
    lines = [json.loads(x) for x in (out / "export" / "densefusion.jsonl").read_text().splitlines()]
    assert {x["image_id"] for x in lines} == set(samples)
    for x in lines:
        assert x["caption"] == samples[x["image_id"]]["txt"].decode()
        if x["image_id"] == "truncated":  # cannot become a PNG: its own bytes, its own extension
            assert x["image_path"].endswith("truncated.jpg")
            continue
        assert x["url"].endswith(f"{x['image_id']}.jpg")
        img = Image.open(out / "export" / x["image_path"])
        assert img.format == "PNG" and img.size == (160, 120) and x["image_path"].startswith("images/0000")
    llava = json.loads((out / "export" / "llava_pretrain.json").read_text())
    assert [c["id"] for c in llava] == [x["image_id"] for x in lines]
    assert all(c["conversations"][0] == {"from": "human", "value": "<image>"} for c in llava)
    assert all(c["conversations"][1]["value"] == samples[c["id"]]["txt"].decode() for c in llava)
    r = cli("verify", str(out))
    assert r.returncode == 0, r.stderr
    r = cli("card", str(out))
    assert r.returncode == 0 and "not model-written" in (out / "README.md").read_text()
    train_eve_on(out, tmp_path)


def train_eve_on(out: Path, tmp_path: Path) -> None:
    """`fusionweave train eve`, its three stages on this build: stages 1-2 on the caption shards,
    stage 3 on the LLaVA export (tiny random LLM and teacher: this checks the plumbing)."""
    models = tmp_path / "models"
    for kind in ("llm", "vision-teacher"):
        assert cli("tiny-model", kind, "--out", str(models / kind)).returncode == 0
    quick = {"epochs": 1, "lr": 1e-3, "device": "cpu"}
    # batch 1: every sample of the epoch is met (a batch of 4 would leave 1 of the 13 unread)
    shards = {"shards": [str(out / "caption")], "batch_size": 1, "workers": 0, "max_length": 96}
    cfg = {"llm": str(models / "llm"), "teacher": str(models / "vision-teacher"),
           "image": {"max_side": 32, "patch": 4}, "pel": {"width": 32, "heads": 4}, "pal": {"every": 1, "layers": 2},
           "stage1": {"data": shards, "recipe": quick}, "stage2": {"data": shards, "recipe": quick},
           "stage3": {"data": {"conversations": [{"path": str(out / "export" / "llava_pretrain.json"),
                                                  "image_root": str(out / "export")}],
                               "batch_size": 4, "workers": 0, "max_length": 96}, "recipe": quick}}
    (tmp_path / "eve.yaml").write_text(yaml.safe_dump(cfg))
    run = tmp_path / "eve"
    r = cli("train", "eve", "--config", str(tmp_path / "eve.yaml"), "--out", str(run), "--no-progress")
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads((run / "eve_report.json").read_text())
    assert [report[f"stage{n}"]["status"] for n in (1, 2, 3)] == ["trained"] * 3
    # the truncated JPEG is refused by the loader of every stage, counted by reason, not trained on
    assert all(sum(report[f"stage{n}"]["rejects"].values()) >= 1 for n in (1, 2, 3)), report
    for n in (1, 2, 3):
        rows = [json.loads(x) for x in (run / f"stage{n}" / "steps.jsonl").read_text().splitlines()]
        assert rows and all(np.isfinite(x["loss"]) for x in rows)
    from fusionweave.trainers.eve.model import EveModel

    model = EveModel.from_pretrained(Path(report["model"]))
    img = Image.open(out / "export" / json.loads((out / "export" / "llava_pretrain.json").read_text())[0]["image"])
    assert isinstance(model.generate(img, "<image>", max_new_tokens=4), str)
    r = cli("train", "eve", "--config", str(tmp_path / "eve.yaml"), "--out", str(run), "--no-progress")
    assert r.returncode == 0 and json.loads((run / "eve_report.json").read_text())["stage3"]["status"] == "already finished"


def test_transformers_captioner_build(data: dict, tmp_path: Path) -> None:
    out = tmp_path / "out"
    cap = {"kind": "transformers", "model": str(data["llava"]), "max_new_tokens": 8}
    r = cli(*build(recipe(data, tmp_path / "d.yaml", cap, qc={"repetition": "flag"}, export={"images": "none"}), out))
    assert r.returncode == 0, r.stderr[-3000:]
    st = json.loads((out / "caption" / "_stats.json").read_text())
    assert st["balanced"] and st["captioner"]["kind"] == "transformers"
    rejects = {x["key"]: x["reason"] for x in all_rejects(out, "caption").to_pylist()}
    assert rejects == {"corrupt": "undecodable", "truncated": "caption_failed"}
    samples = shard_samples(out, "caption")
    assert len(samples) + len(rejects) == data["n"]
    for s in samples.values():
        meta = json.loads(s["json"])
        assert s["txt"].decode().strip() and meta["captioner"]["model"] == str(data["llava"])
        assert meta["finish_reason"] in ("stop", "length")


@pytest.fixture(scope="module")
def server(data: dict):
    with ChatServer(str(data["llava"]), max_new_tokens=8) as srv:
        yield srv


def test_openai_captioner_with_teacher_seed_set(data: dict, server: ChatServer, tmp_path: Path) -> None:
    out = tmp_path / "out"
    cap = {"kind": "openai", "base_url": server.base_url, "model": "pivot", "requests": 2, "backoff": 0.01}
    teacher = {"enabled": True, "n": 3, "captioner": {**cap, "model": "teacher"}}
    server.plan = ["malformed"]
    before = server.served
    r = cli(*build(recipe(data, tmp_path / "d.yaml", cap, teacher=teacher, export={"images": "original"}), out))
    assert r.returncode == 0, r.stderr[-3000:]
    rejects = {x["key"]: (x["reason"], x["detail"]) for x in all_rejects(out, "caption").to_pylist()}
    failed = [k for k, (reason, detail) in rejects.items() if reason == "caption_failed"]
    assert rejects["corrupt"][0] == "undecodable" and "truncated" in failed and len(failed) == 2
    assert any("malformed response" in rejects[k][1] for k in failed)
    teach = shard_samples(out, "teacher")
    t_stats = json.loads((out / "teacher" / "_stats.json").read_text())
    assert t_stats["balanced"] and t_stats["rows_in"] == 3 and t_stats["seed_set"] == 3
    teacher_failed = t_stats["rejected"]  # the truncated image may be in the seed set
    assert len(teach) == 3 - teacher_failed
    sft = json.loads((out / "teacher_export" / "teacher_sft.json").read_text())
    assert len(sft) == len(teach)
    for c in sft:
        human = c["conversations"][0]["value"]
        assert human.startswith("<image>\nDescribe the image in detail") and "Detection Box:\ndog: [0.100" in human
        assert c["conversations"][1]["value"] == teach[c["id"]]["txt"].decode()
        assert (out / "teacher_export" / c["image"]).read_bytes() == teach[c["id"]]["jpg"]
    # 12 good images for the pivot (one answer malformed) + the teacher's; images no decoder
    # reads never cost a request
    assert server.served - before == data["good"] - 1 + len(teach)
    r = cli("verify", str(out))
    assert r.returncode == 0, r.stderr


def test_kill_mid_captioning_resumes_without_paying_twice(data: dict, server: ChatServer, tmp_path: Path) -> None:
    out = tmp_path / "out"
    cap = {"kind": "openai", "base_url": server.base_url, "model": "pivot-2", "requests": 1, "batch_size": 1}
    cfg = recipe(data, tmp_path / "d.yaml", cap, export={"images": "none"})
    before = server.served
    server.plan = ["sleep:0.4"] * 40
    kill_build_when(build(cfg, out), lambda: manifest_lines(out / "caption" / "_manifest.jsonl") >= 1)
    server.plan = []
    r = cli(*build(cfg, out))
    assert r.returncode == 0, r.stderr[-3000:]
    samples = shard_samples(out, "caption")
    assert len(samples) == data["good"]  # every good sample once: nothing lost, nothing twice
    # each caption was paid for once, except at most the requests in flight at the kill
    assert data["good"] <= server.served - before <= data["good"] + 2
