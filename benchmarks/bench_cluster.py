"""The cost of the cluster path: the curate build (metadata, download, validate) on one Ray node
of 2 CPUs vs a simulated cluster of 2 nodes of 1 CPU each (`ray.cluster_utils.Cluster`: a head
and a worker node, the driver connected by address, so parts are spread over nodes, the
preflight runs, and objects move between node stores), same data, same total CPUs. The
cluster's shards are checked to be byte-identical to the single node's.

    python benchmarks/bench_cluster.py [--n 1000] [--rounds 2]
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import Result, emit, parse  # noqa: E402
from benchmarks.bench_download import make_images  # noqa: E402
from benchmarks.bench_s3 import build, shard_digests  # noqa: E402


def timed_builds(cfg: object, work: Path, side: str, rounds: int, address: str | None) -> list[float]:
    from fusionweave.orchestration.ray_engine import RayEngine

    eng = RayEngine(address=address, num_cpus=None if address else 2, progress=False)
    with eng:
        build(cfg, work / f"{side}-warm-up", eng)  # workers and their imports, for both sides alike
        return [build(cfg, work / f"{side}-{r}", eng) for r in range(rounds)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--per-shard", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=2)
    args = parse(ap, {"ci": {"n": 60, "per_shard": 20, "rounds": 1}})

    from ray.cluster_utils import Cluster

    from fusionweave.pipelines.curate.config import CurateConfig
    from fusionweave.pipelines.fixtures.sample_server import SampleServer

    work = Path(tempfile.mkdtemp(prefix="fw-bench-cluster-"))
    times: dict[str, list[float]] = {}
    try:
        with SampleServer(work / "data") as srv:
            parquet = make_images(work / "data", args.n, srv.base_url)
            cfg = CurateConfig.model_validate({
                "metadata": {"input": [str(parquet)], "rows_per_shard": args.per_shard},
                "url_policy": {"allow_private_networks": ["127.0.0.1"]},
                "download": {"thread_count": 16, "retries": 0}})
            times["one_node"] = timed_builds(cfg, work, "one", args.rounds, None)
            cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
            try:
                cluster.add_node(num_cpus=1)
                cluster.wait_for_nodes()
                times["two_nodes"] = timed_builds(cfg, work, "two", args.rounds, cluster.address)
            finally:
                cluster.shutdown()
            for r in range(args.rounds):
                if shard_digests(work / f"one-{r}") != shard_digests(work / f"two-{r}"):
                    raise SystemExit("the two-node build's shards differ from the one-node build's")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    best = {k: min(v) for k, v in times.items()}
    emit([Result("curate, 2-node cluster", f"whole curate build on 2 simulated 1-CPU nodes vs one 2-CPU node, "
                 f"{args.n} images, best of {args.rounds}, shards identical", args.n / best["two_nodes"],
                 args.n / best["one_node"], "images/s", ">= 0.9",
                 {"one_node_s": [round(t, 2) for t in times["one_node"]],
                  "two_nodes_s": [round(t, 2) for t in times["two_nodes"]]})], args)


if __name__ == "__main__":
    main()
