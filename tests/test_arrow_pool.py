"""The embedded session's workers use an Arrow pool that hands freed pages back when idle."""
from __future__ import annotations

import os

import pyarrow as pa
import pytest

from fusionweave.orchestration import arrow_pool
from fusionweave.orchestration.arrow_pool import ENV, set_for_local_workers, worker_pool


def test_the_users_choice_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, "mimalloc")
    assert worker_pool() is None
    set_for_local_workers()
    assert os.environ[ENV] == "mimalloc"


def test_without_a_choice_jemalloc_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV, raising=False)
    expected = "jemalloc" if "jemalloc" in pa.supported_memory_backends() else "system"
    assert worker_pool() == expected
    set_for_local_workers()
    assert os.environ[ENV] == expected


def test_a_pyarrow_without_jemalloc_gets_the_system_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV, raising=False)
    monkeypatch.setattr(arrow_pool.pa, "supported_memory_backends", lambda: ["mimalloc", "system"])
    assert worker_pool() == "system"
    monkeypatch.setattr(arrow_pool.pa, "supported_memory_backends", lambda: ["mimalloc"])
    assert worker_pool() is None  # nothing better: pyarrow's default stays


def test_the_embedded_sessions_workers_use_it(engine: object) -> None:
    import ray

    @ray.remote(num_cpus=0.25)
    def backend() -> str:
        import pyarrow

        return pyarrow.default_memory_pool().backend_name

    # the engine named the pool before its raylet started, unless the user had named one
    assert os.environ.get(ENV) in pa.supported_memory_backends()
    assert ray.get(backend.remote()) == os.environ[ENV]
