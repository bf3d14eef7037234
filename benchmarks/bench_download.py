"""Download + validate images/s: fusionweave's curate download and validate on Ray vs bare
img2dataset (multiprocessing distributor, resize off) on the same loopback URLs, run side by side
in one process. Ours does strictly more: the address guard, our shards, a decode/validate,
sha256 and pHash dedup across the dataset. Measured both ways: fused (the default: one task per
part downloads and decodes) and as two stages keeping the download's shards.

    python benchmarks/bench_download.py [--n 2000]
"""
from __future__ import annotations

import argparse
import io
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import Result, emit, parse  # noqa: E402


def make_images(root: Path, n: int, base_url: str) -> Path:
    (root / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    urls = []
    for i in range(n):
        arr = np.full((512, 640, 3), rng.integers(0, 255, 3), np.uint8)
        for _ in range(6):
            y, x = rng.integers(0, 400), rng.integers(0, 500)
            arr[y:y + rng.integers(30, 200), x:x + rng.integers(30, 200)] = rng.integers(0, 255, 3)
        b = io.BytesIO()
        Image.fromarray(arr).save(b, format="JPEG", quality=85)
        (root / "images" / f"{i:06d}.jpg").write_bytes(b.getvalue())
        urls.append(f"{base_url}/images/{i:06d}.jpg")
    p = root / "urls.parquet"
    pq.write_table(pa.table({"URL": urls, "TEXT": [f"image {i}" for i in range(n)],
                             "WIDTH": [640.0] * n, "HEIGHT": [512.0] * n}), p)
    return p


def run_img2dataset(parquet: Path, out: Path, processes: int, threads: int, per_shard: int) -> float:
    from img2dataset import download

    t0 = time.perf_counter()
    download(url_list=str(parquet), input_format="parquet", url_col="URL", caption_col="TEXT",
             output_format="webdataset", output_folder=str(out), processes_count=processes, thread_count=threads,
             resize_mode="no", number_sample_per_shard=per_shard, enable_wandb=False, timeout=10, retries=0,
             disallowed_header_directives=["noai", "noimageai", "noindex", "noimageindex"])
    return time.perf_counter() - t0


def run_ours(parquet: Path, out: Path, threads: int, per_shard: int, keep_shards: bool) -> tuple[float, dict]:
    from fusionweave.orchestration.ray_engine import RayEngine
    from fusionweave.pipelines.curate import download, metadata, validate
    from fusionweave.pipelines.curate.config import CurateConfig

    cfg = CurateConfig.model_validate({
        "metadata": {"input": [str(parquet)], "rows_per_shard": per_shard},
        "url_policy": {"allow_private_networks": ["127.0.0.1"]},
        "download": {"thread_count": threads, "retries": 0, "keep_shards": keep_shards},
        "validate": {"min_short_edge": 448}})
    with RayEngine(num_cpus=2, progress=False) as eng:
        metadata.run(cfg, out, eng)
        t0 = time.perf_counter()
        if keep_shards:
            download.run(cfg, out, eng)
        st = validate.run(cfg, out, eng)
        return time.perf_counter() - t0, st


def main() -> None:
    from fusionweave.pipelines.fixtures.sample_server import SampleServer

    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=16)
    args = parse(ap, {"ci": {"n": 40}})
    tmp = Path(tempfile.mkdtemp(prefix="fw-bench-dl-"))
    per_shard = max(50, args.n // 8)
    try:
        with SampleServer(tmp / "data") as srv:
            parquet = make_images(tmp / "data", args.n, srv.base_url)
            t_bare = run_img2dataset(parquet, tmp / "bare", 2, args.threads, per_shard)
            t_fused, fused = run_ours(parquet, tmp / "fused", args.threads, per_shard, keep_shards=False)
            t_two, two = run_ours(parquet, tmp / "two", args.threads, per_shard, keep_shards=True)
        assert fused["rows_out"] == two["rows_out"] == args.n, (fused, two)
        what = f"vs bare img2dataset (2 processes x {args.threads} threads), {args.n} JPEGs 640x512 on 127.0.0.1"
        emit([Result("download + validate", f"curate validate fused with the download (the default) on Ray {what}",
                     args.n / t_fused, args.n / t_bare, "images/s", ">= 1.0"),
              Result("download + validate, two stages", f"curate download then validate, the download's shards kept, "
                     f"on Ray {what}", args.n / t_two, args.n / t_bare, "images/s")], args)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
