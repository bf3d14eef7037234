"""End-to-end builds made once per test session and shared, read-only, by every module that
tests them (tests/conftest.py imports these fixtures): the curate build of the 1,000 sample rows,
the select build with its tiny CLIP, the perceive build with its tiny experts, the MCL build of
the generated sources. Each one used to be rebuilt by each module that read it (the e2e test's,
then trace's and view's), ~30-60 s a build on 2 cores.

Read-only: a test that changes a build (a card written into it, another pipeline built on top,
a kill and resume) works on its own copy (`shutil.copytree`) or its own build."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image, ImageDraw

from tests.helpers import cli, write_recipe

CURATE_STAGES = ["metadata", "download", "validate"]
SELECT_STAGES = ["embed", "cluster", "select"]


# ---------------------------------------------------------------- curate

@pytest.fixture(scope="session")
def curate_recipe(sample_data, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root, _, _ = sample_data
    return write_recipe(tmp_path_factory.mktemp("recipe") / "curate.yaml", root / "laion.parquet")


@pytest.fixture(scope="session")
def curate_reference(curate_recipe: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ref") / "out"
    r = cli("build", "curate", "--config", str(curate_recipe), "--out", str(out), "--no-progress")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "stage validate" in r.stdout and "UNBALANCED" not in r.stdout
    return out


# ---------------------------------------------------------------- select

def select_picture(rng: np.random.Generator, fmt: str = "JPEG") -> bytes:
    # large enough that decoding takes a moment: the kill test needs time between parts
    img = Image.new("RGB", (960, 800), tuple(int(c) for c in rng.integers(0, 256, 3)))
    d = ImageDraw.Draw(img)
    for _ in range(4):
        x0, y0 = (int(v) for v in rng.integers(0, 600, 2))
        box = (x0, y0, x0 + int(rng.integers(100, 360)), y0 + int(rng.integers(100, 360)))
        fill = tuple(int(c) for c in rng.integers(0, 256, 3))
        (d.ellipse if rng.random() < 0.5 else d.rectangle)(box, fill=fill)
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


def select_sample(key: str, data: bytes, ext: str = "jpg") -> dict:
    return {"__key__": key, ext: data, "txt": f"caption {key}", "json": {"key": key, "url": f"http://example.test/{key}"}}


def select_recipe(data: dict, path: Path, **over: object) -> Path:
    sel = {"input": [str(data["folder"])], "embed": {"model": str(data["model"]), "batch_size": 4},
           "cluster": {"clusters": 3, "niter": 10}, "semdedup": {"eps": 0.0001}, "top_n": {"n": None}}
    for dotted, v in over.items():
        if "__" in dotted:
            sec, key = dotted.split("__")
            sel[sec][key] = v
        elif v is None:
            sel.pop(dotted)
    path.write_text(yaml.safe_dump({"seed": 0, "select": sel}))
    return path


def select_args(cfg: Path, out: Path, *extra: str) -> list[str]:
    return ["build", "select", "--config", str(cfg), "--out", str(out), "--no-progress", "--num-cpus", "2", *extra]


@pytest.fixture(scope="session")
def select_data(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """6 shards of 12 samples; copies of earlier images planted later under new keys; one
    corrupt image, one sample without an image and a truncated last shard."""
    from fusionweave.experts.tiny_models import make_tiny_clip
    from fusionweave.pipelines.storage.shard_sink import write_shard

    sample = select_sample
    root = tmp_path_factory.mktemp("select-data")
    rng = np.random.default_rng(0)
    shards = [[sample(f"s{s}-{i:02d}", select_picture(rng)) for i in range(12)] for s in range(6)]
    planted = {}  # copy key -> original key
    for s, i, src in [(2, 3, (0, 1)), (4, 5, (0, 1)), (3, 7, (1, 4)), (5, 0, (2, 9))]:
        orig = shards[src[0]][src[1]]
        shards[s][i] = sample(f"copy-{s}-{i}", orig["jpg"])
        planted[f"copy-{s}-{i}"] = orig["__key__"]
    # the same pixels re-encoded losslessly as PNG: a different file, the same embedding
    png = io.BytesIO()
    Image.open(io.BytesIO(shards[1][2]["jpg"])).save(png, "PNG")
    shards[4][8] = sample("png-copy", png.getvalue(), "png")
    planted["png-copy"] = shards[1][2]["__key__"]
    shards[3][1] = sample("corrupt", b"\xff\xd8\xff\xe0 definitely not a jpeg")
    shards[2][6] = {"__key__": "no-image", "txt": "x", "json": {"url": "http://example.test/no-image"}}
    folder = root / "shards"
    folder.mkdir()
    for n, samples in enumerate(shards):
        write_shard(folder / f"in-{n:02d}.tar", samples)
    write_shard(folder / "in-06.tar", [sample("only-corrupt", b"GIF89a broken")])  # a part with no embeddings
    last = folder / "in-05.tar"
    last.write_bytes(last.read_bytes()[: int(last.stat().st_size * 0.6)])
    model = make_tiny_clip(root / "tiny-clip")
    return {"folder": folder, "model": model, "planted": planted, "root": root}


@pytest.fixture(scope="session")
def select_reference(select_data: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The select build of `select_data`; its recipe is `select.yaml` beside it."""
    out = tmp_path_factory.mktemp("select-ref") / "out"
    r = cli(*select_args(select_recipe(select_data, out.parent / "select.yaml"), out))
    assert r.returncode == 0, r.stderr[-3000:]
    return out


# ---------------------------------------------------------------- perceive

def perceive_sample(key: str, data: bytes, ext: str = "png") -> dict:
    return {"__key__": key, ext: data, "txt": f"alt text {key}", "json": {"key": key, "url": f"http://example.test/{key}"}}


def perceive_recipe(data: dict, path: Path, folder: Path | None = None) -> Path:
    cfg = {"input": [str(folder or data["folder"])], "chunk_size": 3,
           "tagger": {"model": str(data["clip"]), "vocabulary": str(data["vocab"]), "threshold": 0.0, "top_k": 3,
                      "batch_size": 3},
           "detector": {"model": "yolov8n.yaml", "confidence": 0.0, "max_det": 10, "image_size": 320, "batch_size": 3},
           "ovd": {"model": str(data["owl"]), "confidence": 0.0, "batch_size": 3},
           "boxes": {"min_score": 0.0, "max_boxes": 8},
           "ocr": {"min_confidence": 0.5, "batch_size": 3},
           "depth": {"model": str(data["depth"]), "batch_size": 3}}
    path.write_text(yaml.safe_dump({"seed": 0, "perceive": cfg}))
    return path


def perceive_args(cfg: Path, out: Path) -> list[str]:
    return ["build", "perceive", "--config", str(cfg), "--out", str(out), "--no-progress", "--num-cpus", "2"]


@pytest.fixture(scope="session")
def perceive_data(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """4 shards of 6 pictures with text; a corrupt image, a truncated PNG, a sample without an
    image and a truncated last shard; the tiny tagger, OWLv2 and depth models."""
    from fusionweave.experts.tiny_models import make_tiny_clip_pair, make_tiny_depth, make_tiny_owlv2
    from fusionweave.pipelines.storage.shard_sink import write_shard
    from tests.test_experts import TAGS, picture

    sample = perceive_sample
    root = tmp_path_factory.mktemp("perceive-data")
    shards = [[sample(f"s{s}-{i}", picture(10 * s + i, (480, 320), [("OPEN DATA", (60, 200))])) for i in range(6)]
              for s in range(4)]
    shards[1][2] = sample("corrupt", b"\xff\xd8\xff\xe0 not a jpeg at all", "jpg")     # unreadable header: reject
    shards[2][4] = sample("truncated-png", picture(99, (480, 320))[:300])             # header ok, pixels not
    shards[3][0] = {"__key__": "no-image", "txt": "x", "json": {"url": "http://example.test/no-image"}}
    folder = root / "shards"
    folder.mkdir()
    for n, samples in enumerate(shards):
        write_shard(folder / f"in-{n:02d}.tar", samples)
    last = folder / "in-03.tar"
    last.write_bytes(last.read_bytes()[: int(last.stat().st_size * 0.7)])
    vocab = root / "tags.txt"
    vocab.write_text("\n".join(TAGS))
    return {"folder": folder, "clip": make_tiny_clip_pair(root / "clip", TAGS),
            "owl": make_tiny_owlv2(root / "owl", TAGS), "depth": make_tiny_depth(root / "depth"), "vocab": vocab}


@pytest.fixture(scope="session")
def perceive_reference(perceive_data: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("perceive-ref") / "out"
    r = cli(*perceive_args(perceive_recipe(perceive_data, out.parent / "perceive.yaml"), out))
    assert r.returncode == 0, r.stderr[-4000:]
    return out


# ---------------------------------------------------------------- mcl

@pytest.fixture(scope="session")
def mcl_built(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """`fusionweave sample-mcl` (all five modalities, planted bad inputs), then `build mcl` on it."""
    root = tmp_path_factory.mktemp("mcl")
    r = cli("sample-mcl", "--out", str(root / "src"))
    assert r.returncode == 0, r.stderr[-2000:]
    recipe = root / "src" / "mcl.yaml"
    out = root / "build"
    r = cli("build", "mcl", "--config", str(recipe), "--out", str(out), "--no-progress")
    assert r.returncode == 0, r.stderr[-3000:]
    return {"out": out, "recipe": recipe, "src": root / "src", "stdout": r.stdout,
            "cfg": yaml.safe_load(recipe.read_text())["mcl"]}
