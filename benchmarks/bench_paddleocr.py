"""PaddleOCR in the perceive stage vs bare PaddleOCR on the same images, RapidOCR's figures beside.

ours: the perceive stage on Ray (2 CPUs) with only the `ocr` expert, `model: paddleocr` on the
      PP-OCRv4 folders converted from RapidOCR's ONNX (`fusionweave models paddleocr
      --from-rapidocr`), reading shards and writing shards with experts.json.
bare: the same expert objects in one process over the same batches, nothing written.
The same two runs with `model: rapidocr` (the same PP-OCRv4 weights on onnxruntime) for scale.
Helpers (shards, the two loops) are bench_perceive's.

    python benchmarks/bench_paddleocr.py --images 96 --paddle-models DIR
    python benchmarks/bench_paddleocr.py --images 96 --converter-python V/bin/python   # converts first
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.bench_perceive import bare, make_shards, ours, run_args  # noqa: E402
from fusionweave.orchestration.ray_engine import RayEngine  # noqa: E402
from fusionweave.pipelines.perceive.config import PerceiveConfig  # noqa: E402
from fusionweave.pipelines.select.inputs import plan_parts  # noqa: E402


def main() -> None:
    ap = run_args()
    ap.add_argument("--paddle-models", type=Path, default=None, help="folder with det/ and rec/ (converted or official)")
    ap.add_argument("--converter-python", type=Path, default=None, help="convert into WORK/paddleocr first")
    ap.add_argument("--work", type=Path, default=Path("/tmp/fusionweave-bench-paddleocr"))
    args = ap.parse_args()
    models = args.paddle_models or args.work / "paddleocr"
    if not (models / "rec").is_dir():
        from fusionweave.experts.paddleocr_models import convert_rapidocr

        convert_rapidocr(models, args.converter_python)
    make_shards(args.work / "shards", args.images, args.per_shard)
    parts = plan_parts([args.work / "shards"])
    res = {"threads": args.threads, "batch_size": args.batch, "num_cpus": 0.5, "min_confidence": 0.5}
    off = {"enabled": False}
    runs = {"paddleocr": {"model": "paddleocr", "det_model_dir": str(models / "det"),
                          "rec_model_dir": str(models / "rec"), **res},
            "rapidocr": {"model": "rapidocr", **res}}
    with RayEngine(num_cpus=2, progress=False) as engine:
        for name, ocr in runs.items():
            cfg = PerceiveConfig.model_validate({"tagger": off, "detector": off, "ovd": off, "depth": off, "ocr": ocr,
                                                 "chunk_size": args.batch})
            ours(cfg, parts, args.work / "warm", engine)  # actor start-up and model load are not the comparison
            t_ours = ours(cfg, parts, args.work / "out", engine)
            t_bare = bare(cfg, parts)
            print(name, json.dumps({"bare_s": round(t_bare, 2), "ours_s": round(t_ours, 2),
                                    "ratio": round(t_bare / t_ours, 2),
                                    "ours_images_per_s": round(args.images / t_ours, 2),
                                    "bare_images_per_s": round(args.images / t_bare, 2)}), flush=True)


if __name__ == "__main__":
    main()
