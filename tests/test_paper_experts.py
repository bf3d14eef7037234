"""Experts as DenseFusion ran them, offline: an open_clip EVA02-CLIP for the embedder (`build
select`) and the tagger, and YOLO-World queried with each image's tags, its class embeddings
from a local CLIP text tower. Tiny random models throughout; nothing is downloaded (the perceive
build runs with networking refused where the machine allows a network namespace)."""
from __future__ import annotations

import io
import json
import subprocess
import tarfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from fusionweave.experts.embedder import ImageEmbedder
from fusionweave.experts.expert import ExpertError, cell
from fusionweave.experts.open_clip_backend import OpenClipError
from fusionweave.experts.tagger import OpenClipTagger
from fusionweave.experts.yolo_detector import YoloWorldDetector
from fusionweave.pipelines.storage.shard_sink import write_shard
from tests.helpers import cli
from tests.test_experts import TAGS, picture

WORLD = "yolov8s-worldv2.yaml"  # shipped with ultralytics; random weights; a 512-d text head


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict:
    from fusionweave.experts.tiny_models import make_tiny_clip_pair, make_tiny_eva02_clip

    root = tmp_path_factory.mktemp("paper-models")
    eva = make_tiny_eva02_clip(root / "eva")
    vocab = root / "tags.txt"
    vocab.write_text("\n".join(TAGS))
    return {"eva": eva, "vocab": vocab, "root": root,
            "text512": make_tiny_clip_pair(root / "clip512", TAGS, projection_dim=512),
            "text32": make_tiny_clip_pair(root / "clip32", TAGS)}


def encoded(n: int, size: tuple[int, int] = (160, 120)) -> list[bytes]:
    return [picture(i, size) for i in range(n)]


# --- open_clip: the embedder and the tagger --------------------------------------------------------

def test_open_clip_embeddings_have_the_models_width_and_unit_length(models: dict) -> None:
    e = ImageEmbedder(str(models["eva"]), backend="open_clip")
    e.check()
    assert e.dim() == 64
    px, errors = e.preprocessor()([*encoded(3), b"not an image"])
    assert px.shape == (3, 3, 224, 224) and px.dtype == np.uint8
    assert errors[:3] == [None] * 3 and "UnidentifiedImageError" in errors[3]
    e.setup()
    v = e.process({"key": np.array(["a", "b", "c"], dtype=object), "pixels": px})["embedding"]
    assert v.shape == (3, 64) and v.dtype == np.float16
    assert np.allclose(np.linalg.norm(v.astype(np.float32), axis=1), 1, atol=2e-3)
    assert e.info()["backend"] == "open_clip"


def test_open_clip_checkpoint_is_loaded_and_a_missing_one_is_an_error(models: dict, tmp_path: Path) -> None:
    import open_clip
    import torch

    from fusionweave.experts.open_clip_backend import OpenClip

    name = OpenClip(str(models["eva"])).name()
    torch.manual_seed(7)
    ckpt = tmp_path / "eva.pt"
    torch.save(open_clip.create_model(name).state_dict(), ckpt)
    px, _ = ImageEmbedder(str(models["eva"]), backend="open_clip").preprocessor()(encoded(2))
    batch = {"key": np.array(["a", "b"], dtype=object), "pixels": px}
    runs = []
    for _ in range(2):
        e = ImageEmbedder(str(models["eva"]), backend="open_clip", pretrained=str(ckpt))
        e.setup()
        runs.append(e.process(dict(batch))["embedding"])
    assert np.array_equal(runs[0], runs[1])  # the checkpoint's weights, not a fresh random init
    with pytest.raises(OpenClipError, match=r"select\.embed\.pretrained: checkpoint file .*no-such\.pt not found"):
        ImageEmbedder(str(models["eva"]), backend="open_clip", pretrained=str(tmp_path / "no-such.pt")).check()
    with pytest.raises(OpenClipError, match=r"perceive\.tagger\.model: 'EVA02-Nope' is not an open_clip model"):
        OpenClipTagger("EVA02-Nope").check()
    with pytest.raises(OpenClipError, match=r"config .*missing\.json not found"):
        OpenClipTagger(str(tmp_path / "missing.json")).check()
    bad = tmp_path / "bad.pt"
    torch.save({"nothing": torch.zeros(1)}, bad)
    with pytest.raises(OpenClipError, match=r"pretrained: .*bad\.pt does not fit"):
        ImageEmbedder(str(models["eva"]), backend="open_clip", pretrained=str(bad)).setup()


def test_open_clip_tagger_tags_from_the_vocabulary(models: dict) -> None:
    t = OpenClipTagger(str(models["eva"]), vocabulary_file=str(models["vocab"]), threshold=0.0, top_k=3)
    t.check()
    imgs = [*encoded(2), b"broken"]
    batch = {"key": np.array(["a", "b", "c"], dtype=object), "image": np.array(imgs, dtype=object),
             "width": np.array([160, 160, 1]), "height": np.array([120, 120, 1])}
    t.setup()
    out = t.process(t.prepare(batch))["x_tagger"]
    docs = [json.loads(c) for c in out]
    for d in docs[:2]:
        assert d["error"] is None and len(d["results"]) == 3 and {r["tag"] for r in d["results"]} <= set(TAGS)
    assert docs[2]["results"] is None and docs[2]["error"]
    assert t.info()["settings"]["backend"] == "open_clip"


def test_open_clip_config_errors_name_the_field() -> None:
    from pydantic import ValidationError

    from fusionweave.pipelines.perceive.config import TaggerConfig
    from fusionweave.pipelines.select.config import EmbedConfig

    with pytest.raises(ValidationError, match="pretrained is for backend: open_clip"):
        EmbedConfig(model="x", pretrained="/some/ckpt.pt")
    with pytest.raises(ValidationError, match="pretrained is for backend: open_clip"):
        TaggerConfig(model="x", pretrained="/some/ckpt.pt")
    with pytest.raises(ValidationError, match="backend"):
        EmbedConfig(model="x", backend="open-clip")
    assert EmbedConfig(model="EVA02-B-16", backend="open_clip").pretrained == ""


# --- YOLO-World with a local CLIP text tower ---------------------------------------------------------

def tagged_batch(tags: list[list[str]]) -> dict:
    imgs = encoded(len(tags), (200, 150))
    return {"key": np.array([f"k{i}" for i in range(len(tags))], dtype=object), "image": np.array(imgs, dtype=object),
            "width": np.array([200] * len(tags)), "height": np.array([150] * len(tags)),
            "x_tagger": np.array([cell({"results": [{"tag": t, "score": 0.5} for t in ts], "error": None})
                                  for ts in tags], dtype=object)}


def test_yolo_world_labels_come_from_each_images_tags(models: dict) -> None:
    d = YoloWorldDetector(WORLD, text_model=str(models["text512"]), confidence=0.0, image_size=160, max_queries=3)
    d.check()
    d.setup()
    tags = [["dog", "cat", "car", "tree"], ["cat"], [], ["person", "dog"]]
    docs = [json.loads(c) for c in d.process(tagged_batch(tags))["x_ovd"]]
    for ts, doc in zip(tags, docs):
        assert doc["error"] is None
        if not ts:
            assert doc["results"] == []
            continue
        assert doc["results"] and {r["label"] for r in doc["results"]} <= set(ts[:3])
        assert all(0 <= v <= 1 for r in doc["results"] for v in r["box"])
    assert set(d._cache) == {"dog", "cat", "car", "person"}  # each tag embedded once


def test_yolo_world_bad_inputs_fail_before_work(models: dict, tmp_path: Path) -> None:
    with pytest.raises(ExpertError, match=r"text embeddings are 32-d but the YOLO-World head .* takes 512-d"):
        YoloWorldDetector(WORLD, text_model=str(models["text32"])).check()
    with pytest.raises(ExpertError, match="no WorldDetect head"):
        YoloWorldDetector("yolov8n.yaml", text_model=str(models["text512"])).check()
    with pytest.raises(ExpertError, match="perceive.ovd.text_model: backend yolo_world needs"):
        YoloWorldDetector(WORLD).check()
    with pytest.raises(FileNotFoundError, match="no-such-clip"):
        YoloWorldDetector(WORLD, text_model=str(tmp_path / "no-such-clip")).check()
    with pytest.raises(ExpertError, match="not a CLIP image-text model"):
        from fusionweave.experts.tiny_models import make_tiny_depth

        YoloWorldDetector(WORLD, text_model=str(make_tiny_depth(tmp_path / "depth"))).check()
    from pydantic import ValidationError

    from fusionweave.pipelines.perceive.config import OvdConfig

    with pytest.raises(ValidationError, match="text_model is required for backend yolo_world"):
        OvdConfig(model=WORLD, backend="yolo_world")
    with pytest.raises(ValidationError, match="text_model is for backend yolo_world"):
        OvdConfig(model="owl", text_model="clip")


# --- the builds ------------------------------------------------------------------------------------

def network_refused() -> list[str]:
    """A command prefix that runs in a network namespace with only loopback up, if this machine
    allows one (unprivileged user namespaces); else nothing (the offline env variables hold)."""
    prefix = ["unshare", "-rn", "sh", "-c", 'ip link set lo up && exec "$@"', "sh"]
    try:
        ok = subprocess.run([*prefix, "true"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        ok = False
    return prefix if ok else []


def shards(folder: Path, n: int, per: int, words: bool = False) -> Path:
    folder.mkdir(parents=True)
    for s in range(n):
        write_shard(folder / f"in-{s:02d}.tar",
                    [{"__key__": f"s{s}-{i}", "png": picture(10 * s + i, (320, 200),
                                                              [("OPEN DATA", (40, 120))] if words else []),
                      "txt": "x", "json": {"url": f"http://example.test/{s}/{i}"}} for i in range(per)])
    return folder


@pytest.mark.heavy
def test_build_select_with_open_clip_eva02(models: dict, tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    from fusionweave.pipelines.select.embed import embeddings_of

    folder = shards(tmp_path / "in", 2, 5)
    sel = {"input": [str(folder)], "embed": {"backend": "open_clip", "model": str(models["eva"]), "batch_size": 4},
           "cluster": {"clusters": 2, "niter": 5}, "top_n": {"n": None}}
    cfg = tmp_path / "select.yaml"
    cfg.write_text(yaml.safe_dump({"seed": 0, "select": sel}))
    out = tmp_path / "out"
    args = ["build", "select", "--config", str(cfg), "--out", str(out), "--no-progress", "--num-cpus", "2"]
    r = cli(*args)
    assert r.returncode == 0, r.stderr[-3000:]
    side = [pq.read_table(p) for p in sorted((out / "embed").glob("shard-*.parquet"))]
    emb = np.concatenate([embeddings_of(t) for t in side])
    assert emb.shape == (10, 64)
    assert np.allclose(np.linalg.norm(emb.astype(np.float32), axis=1), 1, atol=2e-3)
    build = json.loads((out / "build.json").read_text())
    assert "open_clip" in json.dumps(build)
    # a missing checkpoint stops the build before any work, naming the field
    sel["embed"]["pretrained"] = str(tmp_path / "no-such-eva.pt")
    cfg.write_text(yaml.safe_dump({"seed": 0, "select": sel}))
    r = cli(*["build", "select", "--config", str(cfg), "--out", str(tmp_path / "out2"), "--no-progress"])
    assert r.returncode == 2 and "select.embed.pretrained" in r.stderr and "no-such-eva.pt" in r.stderr
    assert not (tmp_path / "out2" / "embed").exists()


def perceive_recipe(models: dict, folder: Path, path: Path, **ovd: object) -> Path:
    cfg = {"input": [str(folder)], "chunk_size": 3,
           "tagger": {"backend": "open_clip", "model": str(models["eva"]), "vocabulary": str(models["vocab"]),
                      "threshold": 0.0, "top_k": 3, "batch_size": 3},
           "ovd": {"backend": "yolo_world", "model": WORLD, "text_model": str(models["text512"]), "confidence": 0.0,
                   "image_size": 160, "batch_size": 3, **ovd},
           "boxes": {"min_score": 0.0, "max_boxes": 8},
           "ocr": {"enabled": False}}
    path.write_text(yaml.safe_dump({"seed": 0, "perceive": cfg}))
    return path


@pytest.mark.heavy
def test_build_perceive_with_eva02_tagger_and_yolo_world_offline(models: dict, tmp_path: Path) -> None:
    import sys

    folder = shards(tmp_path / "in", 2, 3)
    cfg = perceive_recipe(models, folder, tmp_path / "perceive.yaml")
    out = tmp_path / "out"
    r = subprocess.run([*network_refused(), sys.executable, "-m", "fusionweave.orchestration.cli", "build", "perceive",
                        "--config", str(cfg), "--out", str(out), "--no-progress", "--num-cpus", "2"],
                       cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-4000:]
    seen = 0
    for shard in sorted((out / "perceive").glob("shard-*.tar")):
        with tarfile.open(shard) as tf:
            for m in tf.getmembers():
                if not m.name.endswith(".experts.json"):
                    continue
                doc = json.loads(tf.extractfile(m).read())
                tagger, ovd = doc["experts"]["tagger"], doc["experts"]["ovd"]
                assert tagger["error"] is None and ovd["error"] is None, m.name
                assert tagger["settings"]["backend"] == "open_clip"
                tags = {t["tag"] for t in tagger["results"]}
                assert len(tags) == 3 and ovd["results"]
                assert {d["label"] for d in ovd["results"]} <= tags
                assert ovd["settings"]["text_model"] == str(models["text512"])
                seen += 1
    assert seen == 6
    # a text tower of the wrong width is refused before any work
    bad = perceive_recipe(models, folder, tmp_path / "bad.yaml", text_model=str(models["text32"]))
    r = cli("build", "perceive", "--config", str(bad), "--out", str(tmp_path / "out2"), "--no-progress")
    assert r.returncode == 2 and "32-d" in r.stderr and "512-d" in r.stderr
    assert not (tmp_path / "out2" / "perceive").exists()


def test_tiny_model_command_writes_the_eva02_config(tmp_path: Path) -> None:
    r = cli("tiny-model", "eva02-clip", "--out", str(tmp_path / "eva"))
    assert r.returncode == 0, r.stderr[-2000:]
    cfg = json.loads((tmp_path / "eva" / "EVA02-Tiny-test.json").read_text())
    assert cfg["vision_cfg"]["timm_model_name"].startswith("eva02_") and cfg["embed_dim"] == 64
    ImageEmbedder(str(tmp_path / "eva" / "EVA02-Tiny-test.json"), backend="open_clip").check()
