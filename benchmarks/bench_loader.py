"""Loader throughput (decode + batch) on the same shards:

ours:     `ResumableLoader(ShardStream(...))`, no shuffle buffer, images decoded to uint8 tensors
          and batched, in-process (workers=0) and with 2 DataLoader workers;
bare:     a loop over the same tars with `tarfile`, the same PIL decode and the same collate;
datasets: Hugging Face `datasets` streaming the same shards (`load_dataset("webdataset",
          streaming=True)`), iterated with the same batch size (its own PIL decode).

    python benchmarks/bench_loader.py --images 4000
"""
from __future__ import annotations

import argparse
import io
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import Result, emit, parse  # noqa: E402
from fusionweave.pipelines.storage.shard_sink import write_shard  # noqa: E402
from fusionweave.trainers.stream import ResumableLoader, ShardStream, collate, decode_sample  # noqa: E402


def make(folder: Path, images: int, per_shard: int) -> list[str]:
    if not folder.exists():
        folder.mkdir(parents=True)
        rng = np.random.default_rng(0)
        samples = []
        for i in range(images):
            buf = io.BytesIO()
            Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG", quality=90)
            samples.append({"__key__": f"{i:07d}", "jpg": buf.getvalue(), "txt": f"caption {i}", "cls": str(i % 10)})
        for s in range(0, images, per_shard):
            write_shard(folder / f"shard-{s // per_shard:06d}.tar", samples[s:s + per_shard])
    return sorted(str(p) for p in folder.glob("*.tar"))


def bare(paths: list[str], batch: int) -> int:
    n, buf = 0, []
    for p in paths:
        with tarfile.open(p) as tf:
            cur: dict = {}
            for m in tf:
                key, _, ext = m.name.partition(".")
                if cur and cur["__key__"] != key:
                    buf.append(decode_sample(cur))
                    cur = {}
                cur.setdefault("__key__", key)
                cur[ext] = tf.extractfile(m).read()
            if cur:
                buf.append(decode_sample(cur))
            while len(buf) >= batch:
                collate(buf[:batch])
                buf, n = buf[batch:], n + batch
    return n


def hf(paths: list[str], batch: int) -> int:
    from datasets import load_dataset

    ds = load_dataset("webdataset", data_files={"train": paths}, split="train", streaming=True)
    n = 0
    for b in ds.iter(batch_size=batch):
        n += len(b["__key__"])
        [np.asarray(im) for im in b["jpg"]]
    return n


def timed(fn) -> tuple[float, int]:
    t0 = time.perf_counter()
    n = fn()
    return time.perf_counter() - t0, n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=4000)
    ap.add_argument("--per-shard", type=int, default=500)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--work", type=Path, default=Path("/tmp/fusionweave-bench-loader"))
    args = parse(ap, {"ci": {"images": 256, "per_shard": 64}})
    paths = make(args.work / f"shards-{args.images}", args.images, args.per_shard)
    t_bare, n_bare = timed(lambda: bare(paths, args.batch))
    rates = {}
    for workers in (0, 2):
        ld = ResumableLoader(ShardStream(paths, args.batch, workers=workers, shuffle_buffer=0))
        t, n = timed(lambda: sum(len(b["__key__"]) for b in ld))
        rates[workers] = n / t
    t_hf, n_hf = timed(lambda: hf(paths, args.batch))
    what = f"{args.images} 64x64 JPEGs decoded and batched by {args.batch}"
    emit([Result("loader", f"ResumableLoader(ShardStream), in-process, vs a bare tarfile loop, {what}",
                 rates[0], n_bare / t_bare, "samples/s", ">= 0.9"),
          Result("loader, 2 workers", f"the same with 2 DataLoader workers vs the bare loop, {what}",
                 rates[2], n_bare / t_bare, "samples/s"),
          Result("loader vs datasets", f"ResumableLoader in-process vs Hugging Face datasets streaming, {what}",
                 rates[0], n_hf / t_hf, "samples/s", ">= 2.0")], args)


if __name__ == "__main__":
    main()
