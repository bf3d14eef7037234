"""Ray Train launcher: the same `fit` in every worker of a `TorchTrainer`, so a user with a Ray
cluster trains where the data was built. Ray Train sets up torch.distributed (gloo on CPU, NCCL on
GPU) and the RANK/WORLD_SIZE environment that Accelerate reads, so the core runs unchanged. `OUT`
must be on storage every worker sees (the local disk on one machine, a shared filesystem on a
cluster): the main process writes the checkpoints and logs, every process reads them to resume.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fusionweave.trainers.core.method import Method
from fusionweave.trainers.registry import Fit


def ray_fit(workers: int, address: str | None = None, use_gpu: bool = False, cpus_per_worker: float = 1.0) -> Fit:
    def run(method: Method, out: Path) -> dict[str, Any]:
        import ray
        from ray.train import RunConfig, ScalingConfig
        from ray.train.torch import TorchTrainer

        from fusionweave.orchestration.ray_engine import minimal_local_processes

        if not ray.is_initialized():
            # embedded means embedded: never join a cluster a past `ray start` left on this machine
            with minimal_local_processes(embedded=not address):
                ray.init(address=address or "local", include_dashboard=False, log_to_driver=True,
                         **({} if address else {"num_cpus": max(1, int(workers * cpus_per_worker + 0.999))}))
        out = Path(out).resolve()
        trainer = TorchTrainer(
            _worker, train_loop_config={"method": method, "out": str(out)},
            scaling_config=ScalingConfig(num_workers=workers, use_gpu=use_gpu,
                                         resources_per_worker={"CPU": cpus_per_worker}),
            run_config=RunConfig(storage_path=str(out / "ray_train"), name="run"))
        trainer.fit()
        rows = (out / "metrics.jsonl").read_text().splitlines()
        return json.loads(rows[-1]) if rows else {}

    return run


def _worker(config: dict[str, Any]) -> None:
    from fusionweave.trainers.core.loop import fit

    fit(config["method"], Path(config["out"]), progress=False)
