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
import zlib
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from fusionweave.pipelines.atomic import staging_dir, write_bytes_atomic
from fusionweave.transforms.step import StepStats
from fusionweave.pipelines.build_folder import PartEntry

NAMESPACE = "fusionweave"
RESULT_SHARDS = 16


class BeamEngine:
    def __init__(self, runner: str | None = None, options: list[str] | None = None, num_workers: int | None = None):
        self.runner = runner or "FnApiRunner"
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
        results = Path(_results_dir(desc))
        if results.exists():
            shutil.rmtree(results)
        results.mkdir(parents=True)

        def build(p: Any) -> None:
            _ = (p | f"parts: {desc}" >> beam.Create(items, reshuffle=True)
                 | f"run: {desc}" >> beam.ParDo(_RunPart(fn, desc, str(results))))

        result = self._run(build)
        self.step_metrics[desc] = _step_stats(result, desc)
        for f in sorted(results.glob("*.json")):
            yield PartEntry.from_json(json.loads(f.read_text()))
        shutil.rmtree(results, ignore_errors=True)

    def group_apply(self, paths: list[Path], columns: list[str], group_col: str,
                    fn: Callable[[pa.Table], pa.Table], out_dir: Path, *, desc: str) -> None:
        import apache_beam as beam

        tmp = staging_dir(out_dir)
        if paths:
            def build(p: Any) -> None:
                _ = (p | f"files: {desc}" >> beam.Create([str(x) for x in paths], reshuffle=True)
                     | f"split: {desc}" >> beam.FlatMap(_split_by_group, columns, group_col)
                     # Beam's grouping brings every row with one value together, across the whole input
                     | f"group: {desc}" >> beam.GroupByKey()
                     | f"apply: {desc}" >> beam.FlatMap(_apply_group, fn)
                     | f"gather: {desc}" >> beam.GroupByKey()
                     | f"write: {desc}" >> beam.Map(_write_results, str(tmp)))
            self._run(build)
        tmp.rename(out_dir)


def _results_dir(desc: str) -> str:
    import tempfile

    return tempfile.mkdtemp(prefix="fw-beam-" + "".join(c if c.isalnum() else "-" for c in desc) + "-")


class _RunPart:
    """A DoFn (built lazily so that importing this module does not import Beam)."""

    def __new__(cls, fn: Callable[[dict[str, Any]], PartEntry], desc: str, results: str) -> Any:
        import apache_beam as beam
        from apache_beam.metrics import Metrics

        class RunPart(beam.DoFn):
            def process(self, item: dict[str, Any]) -> Iterator[None]:
                entry = fn(item)
                for step, st in entry.stats.items():
                    Metrics.counter(NAMESPACE, f"{desc}|{step}|rows_in").inc(st.rows_in)
                    Metrics.counter(NAMESPACE, f"{desc}|{step}|rows_out").inc(st.rows_out)
                    for reason, n in st.rejects.items():
                        Metrics.counter(NAMESPACE, f"{desc}|{step}|reject|{reason}").inc(n)
                    Metrics.distribution(NAMESPACE, f"{desc}|{step}|ms").update(int(st.seconds * 1000))
                write_bytes_atomic(Path(results) / f"{entry.part}.json", json.dumps(entry.to_json()).encode())
                return iter(())

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
    t = pq.read_table(path, columns=columns).sort_by(group_col)
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
    t = pa.concat_tables(list(tables))
    path = Path(out_dir) / f"part-{shard:05d}.parquet"
    tmp = path.with_name("." + path.name + ".tmp")
    pq.write_table(t, tmp)
    os.replace(tmp, path)
