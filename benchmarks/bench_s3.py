"""The curate build (metadata, download, validate) with its build folder on local disk vs on an
S3-compatible server on loopback (moto, in a process of its own), same data, same Ray session,
runs alternated; the S3 build's shards are checked to be byte-identical to the local build's.

    python benchmarks/bench_s3.py [--n 1000] [--rounds 3]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import Result, emit, parse  # noqa: E402
from benchmarks.bench_download import make_images  # noqa: E402


def build(cfg: object, out: object, eng: object) -> float:
    from fusionweave.pipelines.curate import pipeline

    t0 = time.perf_counter()
    pipeline.run(cfg, out, eng)
    return time.perf_counter() - t0


def shard_digests(out: object) -> dict[str, dict[str, str]]:
    from fusionweave.pipelines.storage.build_folder import StageFolder

    return {s: {e.shard: e.sha256 for e in StageFolder(out, s).entries().values() if e.shard}
            for s in ("metadata", "download", "validate")}


def start_moto() -> tuple[subprocess.Popen, int]:
    """moto's S3 server in a process of its own, as a server would be; returns it and its port."""
    code = ("import logging, time\nfrom moto.server import ThreadedMotoServer\n"
            "logging.getLogger('werkzeug').setLevel(logging.ERROR)\n"
            "s = ThreadedMotoServer(ip_address='127.0.0.1', port=0, verbose=False)\ns.start()\n"
            "print(s.get_host_and_port()[1], flush=True)\ntime.sleep(10 ** 6)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    return proc, int(proc.stdout.readline())  # type: ignore[union-attr]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--per-shard", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3, help="local, then S3, this many times")
    args = parse(ap, {"ci": {"n": 60, "per_shard": 20, "rounds": 1}})

    import boto3

    from fusionweave.orchestration.ray_engine import RayEngine
    from fusionweave.pipelines.curate.config import CurateConfig
    from fusionweave.pipelines.fixtures.sample_server import SampleServer
    from fusionweave.pipelines.storage import store
    from fusionweave.pipelines.storage.location import ObjectPath

    moto, port = start_moto()
    # set before Ray starts, so its workers reach the same server
    os.environ.update(AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}", AWS_ACCESS_KEY_ID="bench",
                      AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1")
    boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"]).create_bucket(Bucket="fw-bench")
    work = Path(tempfile.mkdtemp(prefix="fw-bench-s3-"))
    times: dict[str, list[float]] = {"local": [], "s3": []}
    try:
        with SampleServer(work / "data") as srv, RayEngine(num_cpus=2, progress=False) as eng:
            parquet = make_images(work / "data", args.n, srv.base_url)
            cfg = CurateConfig.model_validate({
                "metadata": {"input": [str(parquet)], "rows_per_shard": args.per_shard},
                "url_policy": {"allow_private_networks": ["127.0.0.1"]},
                "download": {"thread_count": 16, "retries": 0}})
            # Ray's workers, their imports and (once per process) their S3 clients, for both sides alike
            build(cfg, work / "warm-up", eng)
            build(cfg, ObjectPath("s3://fw-bench/warm-up"), eng)
            for r in range(args.rounds):
                local, remote = work / f"local-{r}", ObjectPath(f"s3://fw-bench/out-{r}")
                times["local"].append(build(cfg, local, eng))
                times["s3"].append(build(cfg, remote, eng))
                if shard_digests(local) != shard_digests(remote):
                    raise SystemExit("the S3 build's shards differ from the local build's")
            rows = json.loads(store.read_text(remote / "validate" / "_stats.json"))["rows_out"]
    finally:
        shutil.rmtree(work, ignore_errors=True)
        moto.kill()
    best = {k: min(v) for k, v in times.items()}
    emit([Result("curate, build folder on S3", f"whole curate build (Ray, 2 CPUs) with its build folder on a loopback "
                 f"S3 server (moto) vs local disk, {args.n} images, best of {args.rounds}, shards identical",
                 args.n / best["s3"], args.n / best["local"], "images/s", ">= 0.8",
                 {"kept": rows, "local_s": [round(t, 2) for t in times["local"]],
                  "s3_s": [round(t, 2) for t in times["s3"]]})], args)


if __name__ == "__main__":
    main()
