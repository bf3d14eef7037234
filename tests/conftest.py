from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Iterator

import pytest

# offline and quiet: no test may reach anything but 127.0.0.1
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


@pytest.fixture(scope="session")
def engine() -> Iterator["object"]:
    """One embedded Ray session for the whole test run (it costs ~5 s and ~0.9 GB to start)."""
    from fusionweave.orchestration.ray_engine import RayEngine

    eng = RayEngine(num_cpus=2, object_store_memory=512 * 1024 * 1024, progress=False)
    eng.start()
    yield eng
    eng.stop()


@pytest.fixture(scope="session")
def sample_data(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, list[str]], str]]:
    """1,000 generated LAION rows with their images served on 127.0.0.1 for the whole session."""
    from fusionweave.pipelines.fixtures.sample_laion import generate
    from fusionweave.pipelines.fixtures.sample_server import SampleServer

    root = tmp_path_factory.mktemp("laion-sample")
    with SampleServer(root, slow_seconds=12.0) as srv:
        planted = generate(1000, root, seed=0, base_url=srv.base_url)
        yield root, planted, srv.base_url


def curate_cfg(parquet: Path | list[Path], **overrides: object) -> "object":
    from fusionweave.pipelines.curate.config import CurateConfig

    data: dict = {
        "metadata": {"input": parquet if isinstance(parquet, list) else [parquet], "rows_per_shard": 100},
        "url_policy": {"allow_private_networks": ["127.0.0.1"]},
        "download": {"timeout": 5, "retries": 0, "thread_count": 16, "keep_shards": True},
    }
    for dotted, value in overrides.items():
        section, key = dotted.split("__")
        data.setdefault(section, {})[key] = value
    return CurateConfig.model_validate(data)


# the end-to-end builds shared by the e2e, trace and view tests, made once a session
from tests.builds import (curate_recipe, curate_reference, mcl_built, perceive_data,  # noqa: E402,F401
                          perceive_reference, select_data, select_reference)


@pytest.fixture
def fresh_out(tmp_path: Path) -> Path:
    out = tmp_path / "out"
    if out.exists():
        shutil.rmtree(out)
    return out
