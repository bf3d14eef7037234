"""The Apache Beam engine: runs a pipeline's parts and groupings as Beam pipelines.

The same stage code (pipelines/curate/metadata.py) runs on Ray or on Beam: this class only
implements the Engine protocol. Locally it uses Beam's FnApiRunner (the engine behind the
DirectRunner, without its attempt to download the Prism runner) in multi-process mode; any
other runner (Flink, Spark, Dataflow, ...) is named by `runner` and configured with
`options`, passed through unchanged. Per-step counts are Beam metrics.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
import zlib
from collections import Counter
from typing import Any, Callable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from fusionweave.pipelines.storage import store
from fusionweave.pipelines.storage.location import Loc, location
from fusionweave.pipelines.storage.published import publish_folder
from fusionweave.transforms.step import StepStats
from fusionweave.pipelines.storage.build_folder import PartEntry

NAMESPACE = "fusionweave"
RESULT_SHARDS = 16


class BeamEngine:
    def __init__(self, runner: str | None = None, options: list[str] | None = None, num_workers: int | None = None,
                 results_at: Loc | None = None):
        """`results_at`: where the part entries a run gathers are written for the driver to read,
        through the storage layer (the build folder on S3 or a shared disk: Flink or Dataflow
        workers do not share the driver's disk); default a local temporary folder."""
        self.runner = runner or "FnApiRunner"
        self.results_at = results_at
        self.options = list(options or [])
        self.num_workers = num_workers or os.cpu_count() or 2
        self.step_metrics: dict[str, dict[str, StepStats]] = {}

    def pipeline_options(self) -> Any:
        from apache_beam.options.pipeline_options import PipelineOptions

        flags = [f"--runner={self.runner}"]
        if self.runner in ("FnApiRunner", "DirectRunner", "BundleBasedDirectRunner"):
            flags += [f"--direct_num_workers={self.num_workers}", "--direct_running_mode=multi_processing"]
        for opt in self.options:
            flags.append(opt if opt.startswith("--") else f"--{opt}")
        return PipelineOptions(flags)

    def start(self) -> "BeamEngine":
        return self

    def stop(self) -> None:
        pass

    def __enter__(self) -> "BeamEngine":
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def _run(self, build: Callable[[Any], None]) -> Any:
        import apache_beam as beam

        p = beam.Pipeline(options=self.pipeline_options())
        build(p)
        result = p.run()
        result.wait_until_finish()
        return result

    def map_partitions(self, items: list[dict[str, Any]], fn: Callable[[dict[str, Any]], PartEntry], *,
                       num_cpus: float, desc: str) -> Iterator[PartEntry]:
        import apache_beam as beam

        if not items:
            return
        slug = "".join(c if c.isalnum() else "-" for c in desc)
        scratch = None if self.results_at is not None else tempfile.mkdtemp(prefix="fw-beam-")
        results = location(self.results_at or scratch) / f"{slug}-{uuid.uuid4().hex}.jsonl"

        def build(p: Any) -> None:
            # the entries travel as elements to one writer: no worker writes to the driver's disk
            _ = (p | f"parts: {desc}" >> beam.Create(items, reshuffle=True)
                 | f"run: {desc}" >> beam.ParDo(_RunPart(fn, desc))
                 | f"gather: {desc}" >> beam.combiners.ToList()
                 | f"results: {desc}" >> beam.Map(_write_entries, str(results)))

        try:
            result = self._run(build)
            self.step_metrics[desc] = _step_stats(result, desc)
            lines = store.read_text(results).splitlines()
        finally:
            store.delete(results)
            if scratch is not None:
                shutil.rmtree(scratch, ignore_errors=True)
        for line in sorted(lines):
            yield PartEntry.from_json(json.loads(line))

    def group_apply(self, paths: list[Loc], columns: list[str], group_col: str,
                    fn: Callable[[pa.Table], pa.Table], out_dir: Loc, *, desc: str) -> None:
        import apache_beam as beam

        with publish_folder(out_dir) as tmp:
            if not paths:
                return

            def build(p: Any) -> None:
                _ = (p | f"files: {desc}" >> beam.Create([str(x) for x in paths], reshuffle=True)
                     | f"split: {desc}" >> beam.FlatMap(_split_by_group, columns, group_col)
                     # Beam's grouping brings every row with one value together, across the whole input
                     | f"group: {desc}" >> beam.GroupByKey()
                     | f"apply: {desc}" >> beam.FlatMap(_apply_group, fn)
                     | f"gather: {desc}" >> beam.GroupByKey()
                     | f"write: {desc}" >> beam.Map(_write_results, str(tmp)))
            self._run(build)


def _write_entries(entries: list[str], results: str) -> None:
    store.put_bytes(location(results), "".join(e + "\n" for e in entries).encode())


class _RunPart:
    """A DoFn (built lazily so that importing this module does not import Beam)."""

    def __new__(cls, fn: Callable[[dict[str, Any]], PartEntry], desc: str) -> Any:
        import apache_beam as beam
        from apache_beam.metrics import Metrics

        class RunPart(beam.DoFn):
            def process(self, item: dict[str, Any]) -> Iterator[str]:
                entry = fn(item)
                for step, st in entry.stats.items():
                    Metrics.counter(NAMESPACE, f"{desc}|{step}|rows_in").inc(st.rows_in)
                    Metrics.counter(NAMESPACE, f"{desc}|{step}|rows_out").inc(st.rows_out)
                    for reason, n in st.rejects.items():
                        Metrics.counter(NAMESPACE, f"{desc}|{step}|reject|{reason}").inc(n)
                    Metrics.distribution(NAMESPACE, f"{desc}|{step}|ms").update(int(st.seconds * 1000))
                yield json.dumps(entry.to_json())  # (key order kept: a part's steps are in run order)

        return RunPart()


def _step_stats(result: Any, desc: str) -> dict[str, StepStats]:
    """Per-step counts read back from Beam's committed metrics."""
    from apache_beam.metrics.metric import MetricsFilter

    q = result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))
    steps: dict[str, StepStats] = {}

    def committed(r: Any) -> Any:
        return r.committed if r.committed is not None else r.attempted

    for c in q["counters"]:
        parts = c.key.metric.name.split("|")
        if parts[0] != desc:
            continue
        st = steps.setdefault(parts[1], StepStats(rejects=Counter()))
        if parts[2] == "rows_in":
            st.rows_in += committed(c)
        elif parts[2] == "rows_out":
            st.rows_out += committed(c)
        elif parts[2] == "reject":
            st.rejects[parts[3]] += committed(c)
    for d in q["distributions"]:
        parts = d.key.metric.name.split("|")
        if parts[0] == desc and parts[1] in steps:
            steps[parts[1]].seconds = committed(d).sum / 1000.0
    return steps


def _split_by_group(path: str, columns: list[str], group_col: str) -> Iterator[tuple[Any, pa.Table]]:
    t = store.read_parquet(path, columns=columns).sort_by(group_col)
    values = t.column(group_col).to_numpy()
    if len(values) == 0:
        return
    starts = np.flatnonzero(np.r_[True, values[1:] != values[:-1]])
    ends = np.r_[starts[1:], len(values)]
    for a, b in zip(starts, ends):
        # `take` copies: a pickled slice would carry the whole file's buffers with it
        yield values[a].item(), t.take(pa.array(np.arange(a, b)))


def _apply_group(kv: tuple[Any, list[pa.Table]], fn: Callable[[pa.Table], pa.Table]) -> Iterator[tuple[int, pa.Table]]:
    key, tables = kv
    out = fn(pa.concat_tables(list(tables)))
    if out.num_rows:
        yield zlib.crc32(repr(key).encode()) % RESULT_SHARDS, out


def _write_results(kv: tuple[int, list[pa.Table]], out_dir: str) -> None:
    shard, tables = kv
    with store.atomic_path(location(out_dir) / f"part-{shard:05d}.parquet") as tmp:
        pq.write_table(pa.concat_tables(list(tables)), tmp)
