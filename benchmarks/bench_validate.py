"""Validate images/s: our DecodeValidate step (decode, EXIF, RGB, size checks, sha256, pHash)
vs a bare PIL decode loop (open + load) over the same encoded images, in one process.

    python benchmarks/bench_validate.py [--n 400] [--image-size 800x600] [--size ci|full] [--json PATH]
"""
from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import Result, best_of, emit, parse  # noqa: E402
from fusionweave.transforms.image_steps import DecodeValidate  # noqa: E402
from fusionweave.transforms.image_validate import ImageLimits  # noqa: E402
from fusionweave.transforms.step import StepChain  # noqa: E402


def images(n: int, w: int, h: int) -> list[bytes]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        arr = np.zeros((h, w, 3), np.uint8)
        arr[:] = rng.integers(0, 255, 3)
        for _ in range(8):
            y, x = rng.integers(0, h - 50), rng.integers(0, w - 50)
            arr[y:y + rng.integers(20, h // 2), x:x + rng.integers(20, w // 2)] = rng.integers(0, 255, 3)
        b = io.BytesIO()
        Image.fromarray(arr).save(b, format="JPEG", quality=90)
        out.append(b.getvalue())
    return out


def bare(blobs: list[bytes]) -> int:
    n = 0
    for b in blobs:
        im = Image.open(io.BytesIO(b))
        im.load()
        n += im.size[0] > 0
    return n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--image-size", default="800x600")
    args = parse(ap, {"ci": {"n": 20}})
    w, h = map(int, args.image_size.split("x"))
    blobs = images(args.n, w, h)
    table = pa.table({"key": [str(i) for i in range(len(blobs))], "image": pa.array(blobs, pa.binary())})
    chain = StepChain([DecodeValidate(ImageLimits(min_short_edge=448))])
    kept, _, _ = chain(table)
    assert kept.num_rows == len(blobs)
    t_bare = best_of(lambda: bare(blobs))
    t_ours = best_of(lambda: chain(table))
    emit([Result("validate", f"DecodeValidate vs bare PIL open+load, {len(blobs)} JPEGs {w}x{h}",
                 len(blobs) / t_ours, len(blobs) / t_bare, "images/s", ">= 0.8")], args)


if __name__ == "__main__":
    main()
