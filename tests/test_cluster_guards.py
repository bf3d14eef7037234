"""Cluster failures: a part lost with its worker runs again; a part that raised does not; a loss
that outlives the retries is one line and exit 75, never a traceback."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from ray import exceptions as rx

from fusionweave.orchestration.cli import cluster_failure


def _dies_once(marker_dir: str) -> Any:
    def fn(item: dict[str, Any]) -> dict[str, Any]:
        tries = Path(marker_dir) / f"{item['part']}.tries"
        with open(tries, "a") as f:
            f.write("x")
        if len(tries.read_text()) == 1:
            os._exit(9)  # as the OOM killer would: the worker process is gone, no exception
        return {"part": item["part"], "ok": True}
    return fn


@pytest.mark.parametrize("workers", [0, 2])
def test_a_part_lost_with_its_worker_runs_again(engine, tmp_path: Path, workers: int) -> None:
    items = [{"part": f"{i:06d}"} for i in range(3)]
    got = list(engine.map_stream(iter(items), _dies_once(str(tmp_path)), num_cpus=0.5, desc="t", workers=workers))
    assert sorted(r["part"] for r in got) == [i["part"] for i in items] and all(r["ok"] for r in got)
    # Each part was lost once and ran again. Actor tasks are at-least-once: a part that finished on
    # an actor just before a queued part killed it may run a third time (harmless: parts commit
    # atomically), so the count is "at least two", not "exactly two".
    runs = {i["part"]: len((tmp_path / f"{i['part']}.tries").read_text()) for i in items}
    assert all(n >= 2 for n in runs.values()), runs


def _raises(marker_dir: str) -> Any:
    def fn(item: dict[str, Any]) -> dict[str, Any]:
        with open(Path(marker_dir) / "tries", "a") as f:
            f.write("x")
        raise ValueError("bad part")
    return fn


def test_a_part_that_raised_is_not_run_again(engine, tmp_path: Path) -> None:
    with pytest.raises(rx.RayTaskError, match="bad part"):
        list(engine.map_stream(iter([{"part": "000000"}]), _raises(str(tmp_path)), num_cpus=0.5, desc="t"))
    assert (tmp_path / "tries").read_text() == "x"


def test_cluster_losses_are_one_line() -> None:
    msg = cluster_failure(RuntimeError("stage failed").with_traceback(None))
    assert msg is None
    try:
        try:
            raise rx.WorkerCrashedError()
        except rx.WorkerCrashedError as inner:
            raise RuntimeError("part 000003 failed") from inner
    except RuntimeError as err:
        msg = cluster_failure(err)
    assert msg is not None and msg.startswith("the cluster lost a worker or node (WorkerCrashedError")
    assert "\n" not in msg
    assert cluster_failure(rx.RayTaskError("fn", "Traceback ...", ValueError("x"))) is None  # the code's own error


def _stalls_once(marker_dir: str) -> Any:
    import time

    def fn(item: dict[str, Any]) -> dict[str, Any]:
        tries = Path(marker_dir) / f"{item['part']}.tries"
        with open(tries, "a") as f:
            f.write("x")
        if item["part"] == "000001" and len(tries.read_text()) == 1:
            time.sleep(120)  # a straggler: the node is alive, the part never ends
        return {"part": item["part"]}
    return fn


@pytest.mark.parametrize("workers", [0, 2])
def test_a_straggling_part_is_run_again(engine, tmp_path: Path, workers: int, monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    monkeypatch.setattr(engine, "part_timeout_s", 4.0)
    items = [{"part": f"{i:06d}"} for i in range(3)]
    t0 = time.perf_counter()
    got = list(engine.map_stream(iter(items), _stalls_once(str(tmp_path)), num_cpus=0.5, desc="t", workers=workers))
    assert sorted(r["part"] for r in got) == [i["part"] for i in items]
    assert time.perf_counter() - t0 < 60  # not the straggler's 120 s
    assert (tmp_path / "000001.tries").read_text() == "xx"


def test_a_part_over_the_limit_on_every_run_stops_the_stage(engine, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    from fusionweave.orchestration.ray_engine import PartTimeout

    def always(item: dict[str, Any]) -> dict[str, Any]:
        time.sleep(120)
        return item

    monkeypatch.setattr(engine, "part_timeout_s", 2.0)
    with pytest.raises(PartTimeout, match=r"part 000000 ran over part_timeout_s \(2 s\) on each of its 2 run"):
        list(engine.map_stream(iter([{"part": "000000"}]), always, num_cpus=0.5, desc="t"))
    assert cluster_failure(PartTimeout("t: part 000000 ran over")) == "t: part 000000 ran over"


def test_the_embedded_session_starts_no_full_dashboard(engine) -> None:
    """ray[default] is installed (for `submit`), yet the embedded session's dashboard and agent
    run as a plain `pip install ray` would start them (minimal): half the start-up."""
    import psutil

    engine.start()
    ours = [p.cmdline() for p in psutil.Process().children(recursive=True) if p.is_running()]
    dashboards = [c for c in ours if any(a.endswith("dashboard/dashboard.py") for a in c)]
    assert dashboards and all("--minimal" in c for c in dashboards), dashboards
