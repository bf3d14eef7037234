"""Metadata stage rows/s on Beam (FnApiRunner, multi-process) vs on Ray vs a bare pyarrow loop,
on the same LAION-shaped parquet (default 5M rows). The bare loop does what the stage does in
the cheapest way: read, filter with pyarrow.compute, exact URL dedup with a Python set, write.

    python benchmarks/bench_metadata_engines.py [--rows 5000000]
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import Result, emit, laion_parquet, parse  # noqa: E402


def bare_loop(src: Path, out: Path) -> int:
    seen: set[str] = set()
    kept = 0
    out.mkdir(parents=True, exist_ok=True)
    pf = pq.ParquetFile(src)
    for i in range(pf.metadata.num_row_groups):
        t = pf.read_row_group(i)
        w, h = t["WIDTH"], t["HEIGHT"]
        n = pc.utf8_length(pc.utf8_trim_whitespace(pc.fill_null(t["TEXT"], "")))
        ok = pc.and_(pc.greater_equal(pc.min_element_wise(w, h), 448), pc.greater(n, 0))
        ok = pc.and_(ok, pc.or_(pc.starts_with(t["URL"], "http://"), pc.starts_with(t["URL"], "https://")))
        t = t.filter(pc.fill_null(ok, False))
        urls = t["URL"].to_pylist()
        first = []
        for u in urls:
            first.append(u not in seen)
            seen.add(u)
        t = t.filter(pa.array(first))
        pq.write_table(t, out / f"part-{i:05d}.parquet")
        kept += t.num_rows
    return kept


def ours(src: Path, out: Path, engine_name: str) -> int:
    from fusionweave.pipelines.curate import metadata
    from fusionweave.pipelines.curate.config import CurateConfig

    cfg = CurateConfig.model_validate({"metadata": {"input": [str(src)], "rows_per_shard": 250_000}})
    if engine_name == "beam":
        from fusionweave.orchestration.beam_engine import BeamEngine

        return metadata.run(cfg, out, BeamEngine(num_workers=2))["rows_out"]
    from fusionweave.orchestration.ray_engine import RayEngine

    with RayEngine(num_cpus=2, progress=False) as eng:
        return metadata.run(cfg, out, eng)["rows_out"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=5_000_000)
    args = parse(ap, {"ci": {"rows": 20_000}})
    src = laion_parquet(Path("/tmp/fusionweave-bench") / f"laion-{args.rows}.parquet", args.rows)
    tmp = Path(tempfile.mkdtemp(prefix="fw-bench-engines-"))
    times, kept = {}, {}
    try:
        for name, fn in [("bare pyarrow loop", lambda: bare_loop(src, tmp / "bare")),
                         ("Ray engine", lambda: ours(src, tmp / "ray", "ray")),
                         ("Beam engine (FnApiRunner, 2 processes)", lambda: ours(src, tmp / "beam", "beam"))]:
            t0 = time.perf_counter()
            kept[name] = fn()
            times[name] = time.perf_counter() - t0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    base = times["bare pyarrow loop"]
    emit([Result(f"metadata stage, {name}", f"the whole metadata stage vs a bare pyarrow loop, {args.rows:,} rows",
                 args.rows / times[label], args.rows / base, "rows/s", ">= 0.5",
                 {"kept": kept[label], "bare_kept": kept["bare pyarrow loop"]})
          for name, label in (("Ray", "Ray engine"), ("Beam", "Beam engine (FnApiRunner, 2 processes)"))], args)


if __name__ == "__main__":
    main()
