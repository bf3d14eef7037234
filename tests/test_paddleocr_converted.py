"""The `paddleocr` OCR backend for real, offline: PaddleOCR 3.x on the PP-OCRv4 models RapidOCR ships,
converted by `fusionweave models paddleocr --from-rapidocr` (x2paddle, in separate processes).

The conversion needs a converter Python with x2paddle==1.6.0 and onnx==1.16.2 (a pin the main
environment does not take). Without network the command cannot pip-install them, so these tests
use FUSIONWEAVE_X2PADDLE_PYTHON when it names such a Python and are skipped otherwise; the
bad-input tests always run."""
from __future__ import annotations

import io
import json
import os
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image, ImageDraw, ImageFont

from fusionweave.experts.expert import ExpertError
from fusionweave.experts.ocr import OcrExpert
from fusionweave.experts.paddleocr_models import FILES, has_x2paddle
from fusionweave.pipelines.storage.shard_sink import write_shard
from fusionweave.transforms.boxes import iou_matrix
from tests.helpers import cli
from tests.test_experts import picture

# the full install has x2paddle (the `paddleocr-convert` extra); another converter Python can be named
CONVERTER = os.environ.get("FUSIONWEAVE_X2PADDLE_PYTHON", "") or (sys.executable if has_x2paddle() else "")
NO_CONVERTER = ("needs a converter Python with x2paddle==1.6.0 and onnx==1.16.2 to convert RapidOCR's ONNX models; "
                "without network `fusionweave models paddleocr --from-rapidocr` cannot pip-install them into its "
                "throwaway venv, so set FUSIONWEAVE_X2PADDLE_PYTHON to such a Python (python -m venv V; put this "
                "venv's site-packages in a .pth in V; V/bin/pip install --no-deps x2paddle==1.6.0 onnx==1.16.2)")
needs_converter = pytest.mark.skipif(not (CONVERTER and Path(CONVERTER).is_file()), reason=NO_CONVERTER)

WORDS = ["FUSION", "Weave2024", "DATA", "Ocean", "SIGNAL", "Market", "Bridge", "Yellow", "Planet", "Window",
         "Garden", "STATION", "Coffee", "Number7", "River", "Silver"]
FONTS = ["/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", "/usr/share/fonts/truetype/liberation/LiberationSerif-Regular.ttf",
         "/usr/share/fonts/truetype/liberation/LiberationMono-Bold.ttf"]


# --- bad input: before any work ----------------------------------------------------------------------

def test_missing_or_partial_model_folders_are_errors_before_work(tmp_path: Path) -> None:
    with pytest.raises(ExpertError, match=r"needs local model dirs; missing or not a folder: det_model_dir=None"):
        OcrExpert("paddleocr", rec_model_dir=str(tmp_path)).check()
    det, rec = tmp_path / "det", tmp_path / "rec"
    for d in (det, rec):
        d.mkdir()
        for f in FILES:
            (d / f).write_text("x")
    OcrExpert("paddleocr", det_model_dir=str(det), rec_model_dir=str(rec)).check()  # complete: passes
    (rec / "inference.pdiparams").unlink()
    with pytest.raises(ExpertError, match=r"incomplete PaddleOCR model folder: rec_model_dir=.* lacks inference\.pdiparams"):
        OcrExpert("paddleocr", det_model_dir=str(det), rec_model_dir=str(rec)).check()


def test_models_command_refuses_a_missing_converter(tmp_path: Path) -> None:
    r = cli("models", "paddleocr", "--from-rapidocr", "--out", str(tmp_path / "m"),
            "--converter-python", str(tmp_path / "no-python"))
    assert r.returncode == 2 and "--converter-python" in r.stderr and "not found" in r.stderr
    r = cli("models", "paddleocr", "--out", str(tmp_path / "m"))
    assert r.returncode == 2 and "--from-rapidocr" in r.stderr
    assert not (tmp_path / "m").exists()


def test_paddleocr_config_fields() -> None:
    from fusionweave.pipelines.perceive.config import OcrConfig

    cfg = OcrConfig(model="paddleocr", det_model_dir="d", rec_model_dir="r", threads=2)
    assert cfg.enable_mkldnn is False and cfg.resources().torch_threads() == 2
    e = OcrExpert("paddleocr", det_model_dir="d", rec_model_dir="r", enable_mkldnn=True)
    assert e.info()["settings"]["enable_mkldnn"] is True
    assert "enable_mkldnn" not in OcrExpert("rapidocr").info()["settings"]


# --- converted models --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not (CONVERTER and Path(CONVERTER).is_file()):
        pytest.skip(NO_CONVERTER)
    out = tmp_path_factory.mktemp("paddleocr") / "models"
    r = cli("models", "paddleocr", "--from-rapidocr", "--out", str(out), "--converter-python", CONVERTER)
    assert r.returncode == 0, r.stderr[-3000:]
    return out


def rendered(seed: int) -> tuple[bytes, list[str]]:
    """Two words in one font, size and angle (within +-10 degrees) on a light background."""
    rng = np.random.default_rng(seed)
    img = Image.new("RGB", (640, 360), tuple(int(c) for c in rng.integers(200, 256, 3)))
    fonts = [f for f in FONTS if Path(f).is_file()]
    words = [WORDS[(2 * seed) % len(WORDS)], WORDS[(2 * seed + 1) % len(WORDS)]]
    for i, word in enumerate(words):
        size = int(rng.integers(28, 56))
        font = ImageFont.truetype(fonts[seed % len(fonts)], size) if fonts else ImageFont.load_default(size=size)
        layer = Image.new("RGBA", (420, 110), (0, 0, 0, 0))
        ImageDraw.Draw(layer).text((10, 10), word, fill=(0, 0, 0, 255), font=font)
        layer = layer.rotate(float(rng.uniform(-10, 10)), expand=True, resample=Image.BICUBIC)
        img.paste(layer, (int(rng.integers(10, 160)), 20 + 170 * i), layer)
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue(), words


def norm(text: str) -> str:
    return "".join(text.split()).replace("I", "l")


@needs_converter
def test_converted_folders_have_paddleocrs_layout(converted: Path) -> None:
    for kind in ("det", "rec"):
        assert all((converted / kind / f).is_file() for f in FILES)
    rec = yaml.safe_load((converted / "rec" / "inference.yml").read_text())
    assert rec["PostProcess"]["name"] == "CTCLabelDecode" and len(rec["PostProcess"]["character_dict"]) > 6000
    readme = (converted / "README.md").read_text()
    assert "rapidocr-onnxruntime" in readme and "x2paddle==1.6.0" in readme


@needs_converter
def test_paddleocr_reads_what_rapidocr_reads(converted: Path) -> None:
    samples = [rendered(s) for s in range(8)]
    batch = {"key": np.array([str(i) for i in range(8)], dtype=object),
             "image": np.array([s[0] for s in samples], dtype=object),
             "width": np.array([640] * 8), "height": np.array([360] * 8)}
    results = {}
    for backend in ("rapidocr", "paddleocr"):
        e = OcrExpert(backend, det_model_dir=str(converted / "det"), rec_model_dir=str(converted / "rec"),
                      min_confidence=0.0)
        e.check()
        e.setup()
        results[backend] = [json.loads(c) for c in e.process(dict(batch))["x_ocr"]]
        e.teardown()
    read_by_rapid = matched = 0
    for (_, words), rapid, paddle in zip(samples, results["rapidocr"], results["paddleocr"]):
        assert rapid["error"] is None and paddle["error"] is None
        for word in words:
            r = [x for x in rapid["results"] if norm(x["text"]) == norm(word)]
            if not r:
                continue
            read_by_rapid += 1
            matched += any(norm(p["text"]) == norm(word) and iou_matrix(np.array([p["box"]]), np.array([r[0]["box"]]))[0, 0] >= 0.7
                           for p in paddle["results"])
    assert read_by_rapid >= 12, results["rapidocr"]
    assert matched >= 0.95 * read_by_rapid, (matched, read_by_rapid, results)


@needs_converter
@pytest.mark.heavy
def test_build_perceive_with_paddleocr(converted: Path, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    write_shard(folder / "in-00.tar", [{"__key__": f"k{i}", "png": picture(i, (480, 320), [("OPEN DATA", (60, 200))]),
                                        "txt": "x", "json": {"url": f"http://example.test/{i}"}} for i in range(3)]
                + [{"__key__": "broken", "png": picture(9)[:200], "txt": "x", "json": {}}])
    cfg = {"input": [str(folder)], "chunk_size": 2,
           "ocr": {"model": "paddleocr", "det_model_dir": str(converted / "det"),
                   "rec_model_dir": str(converted / "rec"), "batch_size": 2, "threads": 1}}
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({"seed": 0, "perceive": cfg}))
    out = tmp_path / "out"
    r = cli("build", "perceive", "--config", str(path), "--out", str(out), "--no-progress", "--num-cpus", "2")
    assert r.returncode == 0, r.stderr[-4000:]
    docs = {}
    for shard in sorted((out / "perceive").glob("shard-*.tar")):
        with tarfile.open(shard) as tf:
            for m in tf.getmembers():
                if m.name.endswith(".experts.json"):
                    docs[m.name.split(".")[0]] = json.loads(tf.extractfile(m).read())["experts"]["ocr"]
    assert set(docs) == {"k0", "k1", "k2", "broken"}
    for key in ("k0", "k1", "k2"):
        ocr = docs[key]
        assert ocr["error"] is None and ocr["model"] == "paddleocr"
        assert {norm(x["text"]) for x in ocr["results"]} == {"OPENDATA"}
        assert all(0 <= v <= 1 for x in ocr["results"] for v in x["box"]) and ocr["results"][0]["score"] > 0.5
    assert docs["broken"]["error"] and docs["broken"]["results"] is None  # one bad image costs only its row
    # incomplete folders stop the build before any work
    (converted / "rec" / "inference.yml").rename(converted / "rec" / "inference.yml.away")
    try:
        r = cli("build", "perceive", "--config", str(path), "--out", str(tmp_path / "out2"), "--no-progress")
    finally:
        (converted / "rec" / "inference.yml.away").rename(converted / "rec" / "inference.yml")
    assert r.returncode == 2 and "lacks inference.yml" in r.stderr
    assert not (tmp_path / "out2" / "perceive").exists()

