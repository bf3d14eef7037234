"""Metadata stage rows/s on Beam (FnApiRunner, multi-process) vs on Ray vs a bare pyarrow loop,
on the same LAION-shaped parquet (default 5M rows). The bare loop does the stage's work in the
cheapest way, in one process: read; normalise URLs (scheme and host lower-cased, IDNA for a
non-ASCII host, once per distinct host); refuse private hosts (once per distinct host); key =
sha256 of the normalised URL; the size and caption filters with pyarrow.compute, naming the first
failing one; exact URL dedup across the whole input (lowest ordinal kept, pyarrow group_by);
write the kept rows and the rejects (key, step, reason, detail, url) as parquet.

    python benchmarks/bench_metadata_engines.py [--rows 5000000]
"""
from __future__ import annotations

import argparse
import hashlib
import ipaddress
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import idna
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import Result, emit, laion_parquet, parse  # noqa: E402

_URL = r"^(?P<scheme>[hH][tT][tT][pP][sS]?)://(?P<host>[^/?#:@\s]+)(?P<target>[/?][^#\s]*)?(?:#.*)?$"


def _host(h: str) -> tuple[str, str | None]:
    """(ASCII lower-case host, refusal or None), as the bare loop judges it."""
    host = h.lower() if h.isascii() else idna.encode(h, uts46=True).decode()
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host, "private_address" if host == "localhost" else None
    return host, "private_address" if ip.is_private or ip.is_loopback else None


def _identity(t: pa.Table, first_ord: int) -> pa.Table:
    parts = pc.extract_regex(t["URL"], _URL)
    hosts = pc.dictionary_encode(pc.struct_field(parts, "host")).combine_chunks()
    judged = [_host(h) for h in hosts.dictionary.to_pylist()]
    host = pa.array([h for h, _ in judged], pa.string()).take(hosts.indices)
    refused = pa.array([r for _, r in judged], pa.string()).take(hosts.indices)
    target = pc.struct_field(parts, "target")
    target = pc.if_else(pc.starts_with(target, "/"), target, pc.binary_join_element_wise("/", target, ""))
    norm = pc.binary_join_element_wise(pc.ascii_lower(pc.struct_field(parts, "scheme")), "://", host, target, "")
    ords = pa.array(np.arange(first_ord, first_ord + t.num_rows, dtype=np.int64))
    ident = pc.coalesce(norm, pc.binary_join_element_wise("src:", ords.cast(pa.string()), ""))
    key = pa.array([hashlib.sha256(b).hexdigest()[:20] for b in ident.cast(pa.binary()).to_pylist()], pa.string())
    url_reason = pc.if_else(pc.is_null(norm), "malformed_url", refused)
    return t.append_column("key", key).append_column("ord", ords).append_column("url_norm", norm) \
        .append_column("url_reason", url_reason)


FILTERS = [("url_safety", None), ("caption_length", "empty_caption"), ("caption_length", "caption_too_short"),
           ("caption_length", "caption_too_long"), ("min_short_edge", "short_edge_too_small")]


def _rejections(t: pa.Table) -> pa.Table:
    """(step, reason) of the first failing filter per row, nulls for a kept row."""
    n = pc.utf8_length(pc.utf8_trim_whitespace(pc.fill_null(t["TEXT"], "")))
    short = pc.fill_null(pc.less(pc.min_element_wise(t["WIDTH"], t["HEIGHT"]), 448), False)
    conds = pc.make_struct(pc.is_valid(t["url_reason"]), pc.equal(n, 0), pc.less(n, 1), pc.greater(n, 4096), short)
    step = pc.case_when(conds, *[pa.scalar(s, pa.string()) for s, _ in FILTERS])
    reason = pc.case_when(conds, t["url_reason"], *[pa.scalar(r, pa.string()) for _, r in FILTERS[1:]])
    return t.append_column("step", step).append_column("reason", reason)


def bare_loop(src: Path, out: Path, rows_per_file: int = 250_000) -> int:
    out.mkdir(parents=True, exist_ok=True)
    pf = pq.ParquetFile(src)
    tables, first_ord = [], 0
    for i in range(pf.metadata.num_row_groups):
        t = _identity(pf.read_row_group(i), first_ord)
        first_ord += t.num_rows
        tables.append(_rejections(t))
    t = pa.concat_tables(tables).combine_chunks()
    live = t.filter(pc.is_null(t["reason"])).select(["url_norm", "ord"])
    first = live.group_by("url_norm", use_threads=False).aggregate([("ord", "min")])
    dup = pc.and_(pc.is_null(t["reason"]), pc.invert(pc.is_in(t["ord"], first["ord_min"])))
    for col, value in (("step", "url_dedup"), ("reason", "duplicate_url")):
        t = t.set_column(t.schema.get_field_index(col), col, pc.if_else(dup, pa.scalar(value), t[col]))
    rejected = pc.is_valid(t["reason"])
    kept = t.filter(pc.invert(rejected)).drop_columns(["url_reason", "step", "reason"])
    for j in range(0, kept.num_rows, rows_per_file):
        pq.write_table(kept.slice(j, rows_per_file), out / f"shard-{j // rows_per_file:06d}.parquet")
    rej = t.filter(rejected)
    pq.write_table(pa.table({"key": rej["key"], "step": rej["step"], "reason": rej["reason"],
                             "detail": pa.nulls(rej.num_rows, pa.string()), "url": rej["URL"]}), out / "rejects.parquet")
    return kept.num_rows


def timed(fn: Callable[[], int]) -> tuple[int, float, float]:
    t0 = time.perf_counter()
    kept = fn()
    return kept, time.perf_counter() - t0, 0.0


def ours(src: Path, out: Path, engine_name: str) -> tuple[int, float, float]:
    """(rows kept, seconds of the stage, seconds of starting the engine). Ray's session is
    started before the clock, as in a build, where it serves every stage; its start-up is
    reported on its own. Beam's FnApiRunner starts per pipeline: that is inside the stage."""
    from fusionweave.pipelines.curate import metadata
    from fusionweave.pipelines.curate.config import CurateConfig

    cfg = CurateConfig.model_validate({"metadata": {"input": [str(src)], "rows_per_shard": 250_000}})
    if engine_name == "beam":
        from fusionweave.orchestration.beam_engine import BeamEngine

        return timed(lambda: metadata.run(cfg, out, BeamEngine(num_workers=2))["rows_out"])
    from fusionweave.orchestration.ray_engine import RayEngine

    t0 = time.perf_counter()
    with RayEngine(num_cpus=2, progress=False) as eng:
        start = time.perf_counter() - t0
        kept, seconds, _ = timed(lambda: metadata.run(cfg, out, eng)["rows_out"])
    return kept, seconds, start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=5_000_000)
    args = parse(ap, {"ci": {"rows": 20_000}})
    src = laion_parquet(Path("/tmp/fusionweave-bench") / f"laion-{args.rows}.parquet", args.rows)
    tmp = Path(tempfile.mkdtemp(prefix="fw-bench-engines-"))
    runs: dict[str, tuple[int, float, float]] = {}
    try:
        runs["bare"] = timed(lambda: bare_loop(src, tmp / "bare"))
        runs["Ray"] = ours(src, tmp / "ray", "ray")
        runs["Beam"] = ours(src, tmp / "beam", "beam")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    bare_kept, bare_s, _ = runs["bare"]
    emit([Result(f"metadata stage, {name}", f"the whole metadata stage ({name}, 2 CPUs) vs a bare pyarrow loop doing "
                 f"the same work in one process, {args.rows:,} rows", args.rows / seconds, args.rows / bare_s, "rows/s",
                 ">= 0.5", {"kept": kept, "bare_kept": bare_kept, "engine_start_s": round(start, 2),
                            "rows_per_s_with_engine_start": round(args.rows / (seconds + start))})
          for name, (kept, seconds, start) in runs.items() if name != "bare"], args)


if __name__ == "__main__":
    main()
