"""PaddleOCR model folders made offline from the PP-OCRv4 ONNX models that RapidOCR's wheel ships.

x2paddle 1.6 converts ONNX to a Paddle inference model, but needs `onnx==1.16.2`, a pin the main
environment must not take on. So the conversion runs in its own processes (detection and
recognition separately), with a converter Python that has x2paddle and that onnx:
- `converter_python` given: used as it is;
- this interpreter, when it has x2paddle (the `paddleocr-convert` extra, part of `all`);
- otherwise a throwaway venv layered over this interpreter's packages (paddle, numpy come from
  here; only `x2paddle==1.6.0` and `onnx==1.16.2` are installed into it, from the package index or
  a local wheelhouse through pip's usual settings) and deleted afterwards.
Each folder then gets PaddleOCR 3.x's layout: `inference.json`, `inference.pdiparams` and an
`inference.yml` (pre/post-processing as the official PP-OCRv4 mobile models; the recognition
dictionary is read from the ONNX model's metadata), and the output folder gets a README that says
where the models came from.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

X2PADDLE = "x2paddle==1.6.0"
ONNX = "onnx==1.16.2"
FILES = ("inference.json", "inference.pdiparams", "inference.yml")
SOURCES = {"det": "ch_PP-OCRv4_det_infer.onnx", "rec": "ch_PP-OCRv4_rec_infer.onnx"}
NAMES = {"det": "PP-OCRv4_mobile_det", "rec": "PP-OCRv4_mobile_rec"}


class ConversionError(RuntimeError):
    pass


def rapidocr_onnx() -> dict[str, Path]:
    """The detection and recognition ONNX files inside the installed rapidocr-onnxruntime wheel."""
    import rapidocr_onnxruntime

    models = Path(rapidocr_onnxruntime.__file__).parent / "models"
    found = {k: models / name for k, name in SOURCES.items()}
    missing = [str(p) for p in found.values() if not p.is_file()]
    if missing:
        raise ConversionError(f"RapidOCR's bundled ONNX models not found: {', '.join(missing)}")
    return found


def missing_files(folder: str | Path | None) -> list[str]:
    """What a PaddleOCR model folder lacks (every file when it is not a folder)."""
    if not folder or not Path(folder).is_dir():
        return list(FILES)
    return [f for f in FILES if not (Path(folder) / f).is_file()]


def model_name(folder: str | Path) -> str | None:
    """The model name a PaddleOCR folder declares (PaddleOCR refuses a folder whose name differs
    from the one it expects, so it is passed on)."""
    import yaml

    doc = yaml.safe_load((Path(folder) / "inference.yml").read_text()) or {}
    return (doc.get("Global") or {}).get("model_name")


def characters(onnx_file: Path) -> list[str]:
    """The recognition dictionary stored in the ONNX model's metadata (`character`)."""
    import onnxruntime as ort

    meta = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"]).get_modelmeta()
    chars = meta.custom_metadata_map.get("character")
    if not chars:
        raise ConversionError(f"{onnx_file}: no `character` dictionary in the ONNX metadata")
    return chars.splitlines()


def inference_yml(kind: str, onnx_file: Path) -> dict[str, Any]:
    if kind == "det":
        return {"Global": {"model_name": NAMES[kind]},
                "PreProcess": {"transform_ops": [
                    {"DecodeImage": {"channel_first": False, "img_mode": "BGR"}},
                    {"DetLabelEncode": None},
                    {"DetResizeForTest": {"resize_long": 960}},
                    {"NormalizeImage": {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
                                        "scale": 1 / 255, "order": "hwc"}},
                    {"ToCHWImage": None},
                    {"KeepKeys": {"keep_keys": ["image", "shape", "polys", "ignore_tags"]}}]},
                "PostProcess": {"name": "DBPostProcess", "thresh": 0.3, "box_thresh": 0.6, "max_candidates": 1000,
                                "unclip_ratio": 1.5}}
    return {"Global": {"model_name": NAMES[kind]},
            "PreProcess": {"transform_ops": [
                {"DecodeImage": {"channel_first": False, "img_mode": "BGR"}},
                {"MultiLabelEncode": {"gtc_encode": "NRTRLabelEncode"}},
                {"RecResizeImg": {"image_shape": [3, 48, 320]}},
                {"KeepKeys": {"keep_keys": ["image", "label_ctc", "label_gtc", "length", "valid_ratio"]}}]},
            "PostProcess": {"name": "CTCLabelDecode", "character_dict": characters(onnx_file)}}


def has_x2paddle() -> bool:
    import importlib.util

    return importlib.util.find_spec("x2paddle") is not None


def throwaway_converter(root: Path) -> Path:
    """A venv under `root` that sees this interpreter's packages and adds x2paddle + onnx 1.16.2."""
    import site

    venv = root / "x2paddle-venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True)
    py = venv / "bin" / "python"
    own = subprocess.run([str(py), "-c", "import site; print(site.getsitepackages()[0])"], check=True,
                         capture_output=True, text=True).stdout.strip()
    # appended after the venv's own site-packages: its onnx 1.16.2 wins, paddle/numpy come from here
    (Path(own) / "_fusionweave_base.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    r = subprocess.run([str(py), "-m", "pip", "install", "--quiet", "--no-deps", X2PADDLE, ONNX],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise ConversionError(f"could not install {X2PADDLE} and {ONNX} into a throwaway venv (pip needs a package "
                              f"index or a local wheelhouse, e.g. PIP_FIND_LINKS): {r.stderr.strip()[-600:]}; or pass "
                              "--converter-python with a Python that has them")
    return py


def convert_one(py: str | Path, onnx_file: Path, work: Path) -> Path:
    """One ONNX model -> a Paddle inference model folder, by x2paddle in its own process."""
    code = ("import sys; from x2paddle.convert import onnx2paddle; "
            "onnx2paddle(sys.argv[1], sys.argv[2], convert_to_lite=False, enable_onnx_checker=True, "
            "disable_feedback=True)")
    env = {**os.environ, "PYTHONNOUSERSITE": "1"}
    r = subprocess.run([str(py), "-c", code, str(onnx_file), str(work)], capture_output=True, text=True, env=env)
    model = work / "inference_model"
    if r.returncode != 0 or not (model / "model.json").is_file():
        raise ConversionError(f"x2paddle failed on {onnx_file.name} (exit {r.returncode}): "
                              f"{(r.stderr or r.stdout).strip()[-800:]}")
    return model


def convert_rapidocr(out: str | Path, converter_python: str | Path | None = None) -> dict[str, Path]:
    """Write OUT/det and OUT/rec (PaddleOCR 3.x model folders) and OUT/README.md."""
    import yaml

    out = Path(out)
    sources = rapidocr_onnx()
    with tempfile.TemporaryDirectory(prefix="fusionweave-x2paddle-") as tmp:
        py = Path(converter_python) if converter_python else \
            Path(sys.executable) if has_x2paddle() else throwaway_converter(Path(tmp))
        done = {}
        for kind, onnx_file in sources.items():
            model = convert_one(py, onnx_file, Path(tmp) / kind)
            dest = out / kind
            if dest.exists():
                shutil.rmtree(dest)
            dest.mkdir(parents=True)
            shutil.copy(model / "model.json", dest / "inference.json")
            shutil.copy(model / "model.pdiparams", dest / "inference.pdiparams")
            (dest / "inference.yml").write_text(yaml.safe_dump(inference_yml(kind, onnx_file), allow_unicode=True,
                                                               sort_keys=False))
            done[kind] = dest
    import rapidocr_onnxruntime

    from importlib.metadata import version

    (out / "README.md").write_text(
        "# PaddleOCR models converted from RapidOCR's ONNX\n\n"
        f"Made by `fusionweave models paddleocr --from-rapidocr`. Sources: the PP-OCRv4 ONNX models shipped in "
        f"rapidocr-onnxruntime {version('rapidocr-onnxruntime')} ({Path(rapidocr_onnxruntime.__file__).parent / 'models'}"
        f": {', '.join(SOURCES.values())}), converted with {X2PADDLE} ({ONNX}) in separate processes. "
        "The recognition dictionary comes from the ONNX metadata; `inference.yml` follows the official "
        f"{NAMES['det']} / {NAMES['rec']} settings.\n\n"
        "Use: `perceive.ocr: {model: paddleocr, det_model_dir: DIR/det, rec_model_dir: DIR/rec}`\n")
    return done
