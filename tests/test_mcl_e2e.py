"""`fusionweave build mcl` end to end on generated sources of all five modalities in the real
formats: frame order and RGB, fbank shape/normalisation/chunking, unit-sphere FPS points, 16-bit
depth paired by key, the planted bad inputs as rejects (in = out + rejects), exports, COCO caption
ground truth, the stage manifest read by training, the card, and a killed build resumed."""
from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import webdataset as wds
from PIL import Image

from fusionweave.pipelines.fixtures.sample_mcl import PLANTED, frame_colour
from fusionweave.pipelines.storage.shard_source import Sample, iter_shard
from tests.helpers import cli, kill_build_when, manifest_lines
from fusionweave.transforms.mcl import audio_fbank, pointcloud, video_frames

pytestmark = pytest.mark.heavy


@pytest.fixture
def built(mcl_built: dict) -> dict:
    """The session's MCL build (tests/builds.py), shared read-only with test_view_mcl."""
    return mcl_built


def samples(out: Path, rel: str) -> list[dict]:
    got = []
    for shard in sorted((out / "mcl").glob(f"{rel}/shard-*.tar")):
        for s in iter_shard(shard):
            assert isinstance(s, Sample)
            got.append({"__key__": s.key, **s.members, "meta": json.loads(s.members["json"])})
    return got


def rejects(out: Path) -> dict[str, str]:
    """media or row -> reason, over every rejects file of the stage."""
    found = {}
    for p in (out / "mcl" / "_rejects").glob("*.parquet"):
        for r in pq.read_table(p).to_pylist():
            found[r["detail"]] = r["reason"]
    return found


def test_accounting_and_planted_rejects(built: dict) -> None:
    st = json.loads((built["out"] / "mcl" / "_stats.json").read_text())
    assert st["balanced"] and st["rows_in"] == st["rows_out"] + st["rejected"] == 53
    rej = rejects(built["out"])
    for reason, items in PLANTED.items():
        for item in items:
            assert any(item in detail and why == reason for detail, why in rej.items()), (reason, item, rej)
    assert sum(st["rejects_by_reason"].values()) == st["rejected"] == len(rej)
    missing = [json.loads(ln) for ln in (built["out"] / "mcl" / "_missing_media.jsonl").read_text().splitlines()]
    assert [Path(m["path"]).name for m in missing] == ["ghost.wav"]
    counts = st["mcl"]["counts"]
    assert counts["video"]["train"] == {"caption": {"msrvtt_caption": 3}, "qa": {"msrvtt_qa": 2}}
    assert counts["depth"]["test_ood"] == {"cls": {"nyu": 2}}  # out-of-domain sets kept apart
    assert st["mcl"]["media"]["video"]["frames"]["mean"] == 10
    assert "samples by modality / split / task / source" in built["stdout"]


def test_video_frames_order_rgb_and_sampling(built: dict) -> None:
    test = samples(built["out"], "video/test/msrvtt_caption_test")
    assert len(test) == 2
    for s in test:
        meta = s["meta"]
        video = int(meta["media"].removeprefix("video").removesuffix(".mp4"))
        assert meta["media_info"]["frame_indices"] == video_frames.eval_indices(10) == [0, 2, 4, 7, 9]
        for i, idx in enumerate(meta["media_info"]["frame_indices"]):
            rgb = np.asarray(Image.open(io.BytesIO(s[f"f{i}.jpg"])))
            assert rgb.shape == (224, 224, 3)
            assert np.abs(rgb.reshape(-1, 3).mean(0) - frame_colour(video, idx)).max() < 12  # RGB, in order
    for s in samples(built["out"], "video/train/msrvtt_caption"):
        idx = s["meta"]["media_info"]["frame_indices"]
        assert all(i < 5 for i in idx[:2]) and all(i >= 5 for i in idx[2:4]) and idx[4] == idx[3]
        assert "mp4" not in s  # the source video is optional, off by default


def test_audio_fbank_chunks_and_flac(built: dict) -> None:
    import soundfile as sf

    train = samples(built["out"], "audio/train/audiocaps")
    assert len(train) == 2
    for s in train:
        fb = np.load(io.BytesIO(s["fbank.npy"]))
        assert fb.shape == (2, 512, 128) and fb.dtype == np.float32  # 3 s: one chunk, repeated for training
        wav, rate = sf.read(io.BytesIO(s["flac"]))
        assert rate == 16_000 and wav.ndim == 1 and len(wav) == 48_000
    (long,) = samples(built["out"], "audio/test/audiocaps_test")
    fb = np.load(io.BytesIO(long["fbank.npy"]))
    assert fb.shape == (3, 512, 128)  # 12 s for evaluation: every chunk
    assert len(long["meta"]["answers"]) == 5  # the five reference captions of the clip
    src = (built["src"] / "audio" / "audiocaps" / "ytLong.wav").read_bytes()
    assert np.allclose(fb, audio_fbank.prepare(src, train=False, seed=0), atol=1e-5)  # normalised fbank
    assert abs(float(fb[0].mean()) - float(((audio_fbank.fbank(audio_fbank.decode_mono_16k(src))[:512] - 15.41663)
                                            / (2 * 6.55582)).mean())) < 1e-4


def test_points_unit_sphere_fps(built: dict) -> None:
    got = samples(built["out"], "pointcloud/train/cap3d")
    assert len(got) == 3
    for s in got:
        pts = np.load(io.BytesIO(s["npy"]))
        assert pts.shape == (8192, 6) and pts.dtype == np.float32
        r = np.sqrt((pts[:, :3] ** 2).sum(1))
        assert r.max() == pytest.approx(1.0, abs=1e-5)
        src = (built["src"] / "pointcloud" / "points" / s["meta"]["media"]).read_bytes()
        assert np.array_equal(pts, pointcloud.prepare(src))  # deterministic: the fixed-start FPS
    mn = {s["meta"]["answers"][0]: s["meta"] for s in samples(built["out"], "pointcloud/test/modelnet40")}
    assert {k: (m["task"], m["label"]) for k, m in mn.items()} == {"airplane": ("cls", 0), "chair": ("cls", 3)}


def test_depth_pairs_by_key(built: dict) -> None:
    got = samples(built["out"], "depth/train/llava_depth")
    assert len(got) == 8  # four conversations of two turns: a QA record per turn
    for s in got:
        rgb = Image.open(io.BytesIO(s["jpg"]))
        depth = Image.open(io.BytesIO(s["depth.png"]))
        assert depth.mode in ("I;16", "I") and depth.size == rgb.size
        assert np.asarray(depth).max() == 65535  # scaled per image to 16 bits
        # the EXIF-rotated photo is stored upright, as the depth model saw it
        assert rgb.size == ((60, 80) if s["meta"]["media"] == "000000000003.jpg" else (80, 60))
    turns = sorted((s["meta"]["media"][11], s["meta"]["question"], s["meta"]["answers"][0]) for s in got)
    assert turns[:2] == [("0", "Is it bright?", "yes"), ("0", "What is in the picture?", "a gradient 0")]
    entries = [json.loads(ln) for ln in (built["out"] / "mcl" / "_manifest.jsonl").read_text().splitlines()]
    dm = [e["preprocess"]["model"] for e in entries if e.get("modality") == "depth"]
    assert dm and all(m["model"].endswith("depth") for m in dm)  # the depth model is recorded per shard
    audio = next(e for e in entries if e.get("modality") == "audio")["preprocess"]
    assert (audio["bins"], audio["mean"], audio["std"], audio["chunk_frames"]) == (128, 15.41663, 6.55582, 512)


def test_shards_read_by_webdataset_and_ray(built: dict, engine: object) -> None:
    import ray

    shard = next((built["out"] / "mcl" / "video" / "test").glob("*/shard-*.tar"))
    first = next(iter(wds.WebDataset(str(shard), shardshuffle=False)))
    assert {"f0.jpg", "f4.jpg", "json", "src.jsonl"} <= set(first)
    rows = ray.data.read_webdataset(str(shard)).take_all()
    assert len(rows) == 2


def test_exports_ground_truth_and_stage_manifest(built: dict) -> None:
    exp = built["out"] / "mcl_export"
    gt = json.loads((exp / "video" / "test" / "msrvtt_caption_test_coco_gt.json").read_text())
    assert len(gt["images"]) == 2 and len(gt["annotations"]) == 4
    assert len({a["id"] for a in gt["annotations"]}) == 4 and gt["type"] == "captions"
    assert (exp / "audio" / "train" / "audiocaps.csv").read_text().splitlines()[0] == \
        "audiocap_id,youtube_id,start_time,caption"
    clotho = (exp / "audio" / "test" / "clotho.csv").read_text().splitlines()
    assert clotho[0] == "file_name,caption_1,caption_2,caption_3,caption_4,caption_5" and len(clotho) == 3
    msr = json.loads((exp / "video" / "train" / "msrvtt_caption.json").read_text())
    assert all(set(e) == {"video", "caption"} for e in msr) and len(msr) == 4  # 3 videos, video0 twice
    stages = json.loads((exp / "stages.json").read_text())
    assert stages["order"] == ["image", "video", "audio", "depth", "pointcloud"]
    audio = stages["stages"][2]
    assert {t["source"]: t["ratio"] for t in audio["train"]} == {"audiocaps": 0.56, "audiocaps_qa": 0.44}
    assert audio["evaluate_after"] == ["image", "video", "audio"]
    assert {e["source"] for e in audio["eval"]} == {"audiocaps_test", "clotho"}


def test_training_reads_the_stage_manifest(built: dict) -> None:
    from fusionweave.trainers.mcl_stages import eval_sets, load_stages, stage_mixture

    stages = load_stages(built["out"])
    mix = stage_mixture(built["out"], stages[1], batch_size=2, seed=0)
    it = iter(mix)
    drawn = [next(it) for _ in range(8)]
    assert {i for i, _ in drawn} == {0, 1}
    batch = drawn[0][1]
    assert tuple(batch["frames"].shape) == (2, 5, 3, 224, 224)
    pc = next(iter(stage_mixture(built["out"], stages[4], batch_size=2)))[1]
    assert tuple(pc["npy"].shape) == (2, 8192, 6)
    assert set(eval_sets(built["out"], stages, 2)) == {"coco_caption_val", "msrvtt_caption_test", "msrvtt_qa_test",
                                                       "audiocaps_test", "clotho"}


def test_card_and_verify(built: dict, tmp_path: Path) -> None:
    r = cli("verify", str(built["out"]))
    assert r.returncode == 0, r.stderr
    out = tmp_path / "build"  # the card is written into the build: a copy, the session's stays as built
    shutil.copytree(built["out"], out)
    r = cli("card", str(out))
    assert r.returncode == 0, r.stderr
    card = (out / "README.md").read_text()
    assert "config_name: video" in card and "path: mcl/depth/test_ood/*/shard-*.tar" in card
    assert "| video | train | caption | msrvtt_caption | 3 |" in card


def test_missing_depth_model_fails_before_work(built: dict, tmp_path: Path) -> None:
    out = tmp_path / "out"
    r = cli("build", "mcl", "--config", str(built["recipe"]), "--out", str(out), "--set",
            f"mcl.depth.model={tmp_path / 'nowhere'}")
    assert r.returncode == 2 and "mcl.depth.model" in r.stderr
    assert not (out / "mcl").exists()


def test_kill_mid_build_resumes_to_the_same_shards(built: dict, tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = ["build", "mcl", "--config", str(built["recipe"]), "--out", str(out), "--no-progress"]
    # the plan and 3 of 19 parts: the depth step's parts commit in a burst near the stage's end
    kill_build_when(args, lambda: manifest_lines(out / "mcl" / "_manifest.jsonl") >= 4)
    assert not (out / "mcl" / "_stats.json").exists()
    records = [json.loads(p.read_text()) for p in (out / "mcl" / "_parts").rglob("*.json")]
    committed = {e["shard"]: (out / "mcl" / e["shard"]).stat().st_mtime_ns for e in records if e.get("shard")}
    assert committed
    r = cli(*args)
    assert r.returncode == 0, r.stderr[-2000:]
    # committed parts (records nested under their modality/split/source) are not done again
    assert {s: (out / "mcl" / s).stat().st_mtime_ns for s in committed} == committed

    def digests(o: Path) -> dict:
        return {e["part"]: e.get("sha256") for e in map(json.loads, (o / "mcl" / "_manifest.jsonl").read_text().splitlines())}
    assert digests(out) == digests(built["out"])
    assert (out / "mcl_export" / "stages.json").read_bytes() == (built["out"] / "mcl_export" / "stages.json").read_bytes()


def test_datasets_loads_every_modality(built: dict) -> None:
    from datasets import Audio, load_dataset

    for modality, split, n in (("image", "val", 3), ("video", "test", 4), ("audio", "train", 4),
                               ("depth", "test_ood", 2), ("pointcloud", "test", 2)):
        ds = load_dataset("webdataset", data_files={split: str(built["out"] / "mcl" / modality / split / "*" /
                                                              "shard-*.tar")}, split=split)
        if "flac" in ds.features:  # decoding flac needs FFmpeg's shared libraries; the bytes are there
            ds = ds.cast_column("flac", Audio(decode=False))
        assert len(ds) == n, modality
        row = ds[0]
        assert row["json"]["modality"] == modality and isinstance(row["json"]["answers"], list)
