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

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.bench_perceive import CI_SIZES, make_shards, run_args, side_by_side  # noqa: E402
from benchmarks.common import emit, parse  # noqa: E402
from fusionweave.orchestration.ray_engine import RayEngine  # noqa: E402
from fusionweave.pipelines.perceive.config import PerceiveConfig  # noqa: E402
from fusionweave.pipelines.select.inputs import plan_parts  # noqa: E402


def main() -> None:
    ap = run_args()
    ap.add_argument("--paddle-models", type=Path, default=None, help="folder with det/ and rec/ (converted or official)")
    ap.add_argument("--converter-python", type=Path, default=None, help="convert into WORK/paddleocr first")
    ap.add_argument("--work", type=Path, default=Path("/tmp/fusionweave-bench-paddleocr"))
    args = parse(ap, CI_SIZES)
    models = args.paddle_models or args.work / "paddleocr"
    if not (models / "rec").is_dir():
        from fusionweave.experts.paddleocr_models import convert_rapidocr

        convert_rapidocr(models, args.converter_python)
    shards = args.work / f"shards-{args.images}-{args.per_shard}"  # made once per size
    make_shards(shards, args.images, args.per_shard)
    parts = plan_parts([shards])
    res = {"threads": args.threads, "batch_size": args.batch, "num_cpus": 0.5, "min_confidence": 0.5}
    off = {"enabled": False}
    runs = {"paddleocr": {"model": "paddleocr", "det_model_dir": str(models / "det"),
                          "rec_model_dir": str(models / "rec"), **res},
            "rapidocr": {"model": "rapidocr", **res}}
    with RayEngine(num_cpus=2, progress=False) as engine:
        results = [side_by_side(f"perceive/{name}", f"perceive stage on Ray, ocr: {name} (PP-OCRv4) vs the bare "
                                f"expert loop, {args.images} images 640x480",
                                PerceiveConfig.model_validate({"tagger": off, "detector": off, "ovd": off, "depth": off,
                                                               "ocr": ocr, "chunk_size": args.batch}),
                                parts, args.work, engine, args.images, rounds=args.rounds)
                   for name, ocr in runs.items()]
    emit(results, args)


if __name__ == "__main__":
    main()
