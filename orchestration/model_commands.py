"""`fusionweave models`: make model folders offline. `models paddleocr --from-rapidocr --out DIR`
converts the PP-OCRv4 ONNX models that RapidOCR's wheel ships into PaddleOCR 3.x folders
(DIR/det, DIR/rec, DIR/README.md) with x2paddle, in separate processes (see
experts/paddleocr_models.py). Errors a user can fix are one line and exit 2."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def add_parsers(sub: Any) -> None:
    m = sub.add_parser("models", help="make model folders offline (PaddleOCR from RapidOCR's bundled ONNX)")
    kinds = m.add_subparsers(dest="kind", required=True)
    p = kinds.add_parser("paddleocr", help="PaddleOCR detection + recognition folders converted with x2paddle")
    p.add_argument("--from-rapidocr", action="store_true", required=True,
                   help="convert the PP-OCRv4 ONNX models shipped in rapidocr-onnxruntime (the only source so far)")
    p.add_argument("--out", type=Path, required=True, help="folder for det/, rec/ and README.md")
    p.add_argument("--converter-python", type=Path, default=None,
                   help="a Python with x2paddle==1.6.0 and onnx==1.16.2 (and paddle); default: a throwaway venv over "
                        "this one's packages with just those two installed by pip, deleted afterwards")


def run(args: argparse.Namespace) -> int:
    from fusionweave.experts.paddleocr_models import ConversionError, convert_rapidocr

    py = args.converter_python
    if py is not None and not py.is_file():
        print(f"fusionweave: --converter-python {py} not found", file=sys.stderr)
        return 2
    try:
        done = convert_rapidocr(args.out, py)
    except ConversionError as err:
        print(f"fusionweave: {err}", file=sys.stderr)
        return 2
    print(f"wrote PaddleOCR models: detection {done['det']}, recognition {done['rec']} (see {args.out / 'README.md'})")
    print(f"use them with: perceive.ocr: {{model: paddleocr, det_model_dir: {done['det']}, "
          f"rec_model_dir: {done['rec']}}}")
    return 0
