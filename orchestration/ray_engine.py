"""The Ray Data engine: an embedded local Ray by default, or an existing cluster.

One Ray session per process: `RayEngine.start` connects once and every stage reuses it.
"""
from __future__ import annotations

import contextlib
import functools
import gc
import json
import logging
import os
import time
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fusionweave.experts.base import ChainItem, ModelStep, seconds_column
from fusionweave.orchestration.arrow_pool import set_for_local_workers
from fusionweave.pipelines.engine import Batch
from fusionweave.pipelines.storage import store
from fusionweave.pipelines.storage.filesystems import ENV as STORAGE_ENV
from fusionweave.pipelines.storage.location import Loc
from fusionweave.pipelines.storage.published import publish_folder

log = logging.getLogger(__name__)

# a part lost with its worker or node (OOM kill, node loss) runs again, this many times; one that
# raised does not (the same input would raise again). Parts are idempotent: atomic, deterministic.
SYSTEM_RETRIES = 3


@contextlib.contextmanager
def minimal_local_processes(embedded: bool) -> Iterator[None]:
    """An embedded session starts the processes a plain `pip install ray` starts. With the
    dashboard's packages installed (ray[default], which `fusionweave submit` needs), `ray.init`
    also starts the dashboard server and a full dashboard agent, even with
    include_dashboard=False, and waits for them: 13 s instead of 6 s a start on 2 busy cores,
    for a session nobody will browse or submit jobs to. Ray decides by whether those packages
    import (`get_dashboard_dependency_error`), so that answer is "no" while the head starts."""
    try:
        import ray._private.utils as ray_utils

        original = ray_utils.get_dashboard_dependency_error if embedded else None
    except (ImportError, AttributeError):  # another Ray: start it as it is
        original = None
    if original is None:
        yield
        return
    ray_utils.get_dashboard_dependency_error = lambda: ImportError("fusionweave: embedded session, minimal processes")
    try:
        yield
    finally:
        ray_utils.get_dashboard_dependency_error = original


class RayEngine:
    def __init__(self, address: str | None = None, num_cpus: int | None = None,
                 object_store_memory: int | None = None, progress: bool = True,
                 local_group_max_rows: int = 250_000, local_group_max_bytes: int = 2 << 30,
                 part_timeout_s: float | None = None, part_attempts: int = 2):
        self.address = address or os.environ.get("RAY_ADDRESS") or None
        self.num_cpus = num_cpus
        self.object_store_memory = object_store_memory
        self.progress = progress
        self._owns_session = False
        self._pool: list[Any] = []
        self.rows_per_shuffle_partition = 1_000_000
        self.bytes_per_shuffle_partition = 256 << 20
        self.local_group_max_rows = local_group_max_rows
        self.local_group_max_bytes = local_group_max_bytes
        self.part_timeout_s = part_timeout_s
        self.part_attempts = part_attempts

    def start(self) -> "RayEngine":
        import ray

        if ray.is_initialized():
            return self
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": True,
                                  "configure_logging": True, "logging_level": logging.WARNING}
        if self.address:
            kwargs["address"] = self.address
            if os.environ.get(STORAGE_ENV):  # the cluster's workers build the same filesystems
                kwargs["runtime_env"] = {"env_vars": {STORAGE_ENV: os.environ[STORAGE_ENV]}}
        else:
            # embedded means embedded: never join a cluster a past `ray start` left on this machine
            kwargs["address"] = "local"
            kwargs["num_cpus"] = self.num_cpus or os.cpu_count() or 2
            kwargs["object_store_memory"] = self.object_store_memory or 1 << 30
            set_for_local_workers()
        with minimal_local_processes(embedded=not self.address):
            ray.init(**kwargs)
        self._owns_session = True
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = self.progress
        ctx.print_on_execution_start = False
        return self

    def stop(self) -> None:
        import ray

        if ray.is_initialized():
            for actor in self._pool:
                ray.kill(actor)
        self._pool = []
        if self._owns_session and ray.is_initialized():
            ray.shutdown()
        self._owns_session = False

    def __enter__(self) -> "RayEngine":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def preflight(self, reads: list[Loc], out: Loc) -> None:
        """With more than one node: a small task pinned to each checks that it sees every input
        and can write and read the build folder, so a path that exists only on the driver stops
        the build before any work, naming the node and the path, instead of losing data."""
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        from fusionweave.pipelines.errors import BuildSetupError

        self.start()
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        if len(nodes) < 2:
            return
        check = ray.remote(_node_check)
        refs = {n["NodeManagerAddress"] + " (" + n["NodeID"][:8] + ")": check.options(
            num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(
            [str(p) for p in reads], str(out)) for n in nodes}
        for node, ref in refs.items():
            problem = ray.get(ref)
            if problem:
                raise BuildSetupError(f"node {node}: {problem}; every node must see the inputs and the build folder "
                                      "(a shared file system or object storage)")

    def map_partitions(self, items: list[dict[str, Any]], fn: Callable[[dict[str, Any]], dict[str, Any]], *,
                       num_cpus: float, desc: str) -> Iterator[dict[str, Any]]:
        """One Ray task per part, results in completion order. Parts are whole files, so this
        uses Ray tasks directly: a Ray Data pipeline per part list cost about 30 ms a part, more
        than the work itself for small parts (cluster assignment of a 10k-row side table)."""
        return self.map_stream(iter(items), fn, num_cpus=num_cpus, desc=desc)

    def map_stream(self, items: Iterator[dict[str, Any]], fn: Callable[[dict[str, Any]], dict[str, Any]], *,
                   num_cpus: float, desc: str, workers: int = 0) -> Iterator[dict[str, Any]]:
        """`map_partitions` over items that arrive while it runs (parts whose model work just
        ended): each is submitted as it comes, results are yielded as they complete. With
        `workers`, the items run on that many long-lived actors of this session, started (once)
        right away, so their start-up (a process, imports) overlaps whatever produces the items
        instead of following it (measured: ~5 s after a perceive stage's last chunk on 2 cores)."""
        import ray

        self.start()
        fn_ref = ray.put(fn)
        pool = self._runners(workers) if workers else []
        run = ray.remote(_run_part).options(num_cpus=num_cpus, max_retries=SYSTEM_RETRIES, retry_exceptions=False)
        watch = _Inflight(self.part_timeout_s, self.part_attempts, desc,
                          (lambda n, item: pool[n % workers].run.remote(fn_ref, item)) if workers
                          else (lambda n, item: run.remote(fn_ref, item)),
                          (lambda n: pool[n % workers]) if workers else None)
        # bounded submission: a million parts never sit in the scheduler at once
        window = max(4, int(2 * ray.cluster_resources().get("CPU", 1) / num_cpus))
        for n, item in enumerate(items):
            if len(watch) >= window:
                yield from watch.harvest(until=len(watch) - 1)
            watch.submit(n, item)
            yield from watch.harvest(until=None)
        yield from watch.harvest(until=0)

    def map_with_model(self, items: list[dict[str, Any]], read: Callable[[dict[str, Any]], Iterator[Batch]],
                       step: "ModelStep | Sequence[ChainItem]", *, read_cpus: float, desc: str,
                       sink: Callable[[Batch], Batch] | None = None) -> Iterator[Batch]:
        import ray

        if not items:
            return
        self.start()

        def read_items(batch: dict[str, np.ndarray]) -> Iterator[Batch]:
            for s in batch["item"]:
                yield from read(json.loads(s))
            _release_memory()

        ds = ray.data.from_items([{"item": json.dumps(i)} for i in items], override_num_blocks=len(items))
        ds = ds.map_batches(read_items, batch_size=1, num_cpus=read_cpus, batch_format="numpy")
        chain = [step] if isinstance(step, ModelStep) else list(step)
        for i, st in enumerate(chain):
            # the sink runs in the last step's own worker: the rows stay there, and no extra
            # operator holds them back to bundle them (measured: a separate sink task operator
            # delivered every chunk only at the end of the stage)
            last_sink = sink if i == len(chain) - 1 else None
            if isinstance(st, ModelStep):
                res = st.resources
                ds = ds.map_batches(_StepActor, fn_constructor_args=(st, last_sink), batch_size=res.batch_size,
                                    batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=res.concurrency),
                                    num_cpus=res.num_cpus, num_gpus=res.num_gpus or None, zero_copy_batch=True)
            else:  # CPU work between the models (decode, resize, merge) streams on tasks
                ds = ds.map_batches(_by_chunk(_then(st, last_sink)), batch_size=None, batch_format="numpy",
                                    num_cpus=read_cpus, zero_copy_batch=False)
        if not chain and sink is not None:
            ds = ds.map_batches(_by_chunk(sink), batch_size=None, batch_format="numpy", num_cpus=read_cpus,
                                zero_copy_batch=False)
        yield from ds.iter_batches(batch_size=None, batch_format="numpy")

    def _runners(self, n: int) -> list[Any]:
        while len(self._pool) < n:
            # no CPUs reserved: they must not starve the model pool whose output they write
            self._pool.append(_part_runner().options(num_cpus=0).remote())
        return self._pool[:n]

    def share(self, value: Any) -> "RayShared":
        import ray

        self.start()
        return RayShared(ray.put(value))

    def shuffle_partitions(self, rows: int, nbytes: int) -> int:
        """Ray's default is 200 shuffle partitions, each an aggregator actor: seconds of start-up
        for a few thousand rows. Scaled with the data instead: a partition holds at most
        rows_per_shuffle_partition rows and (wide rows, e.g. embeddings) at most
        bytes_per_shuffle_partition bytes, whichever needs more partitions; at most Ray's 200."""
        return min(200, max(1, -(-rows // self.rows_per_shuffle_partition),
                            -(-nbytes // self.bytes_per_shuffle_partition)))

    def group_apply(self, paths: list[Loc], columns: list[str], group_col: str,
                    fn: Callable[[pa.Table], pa.Table], out_dir: Loc, *, desc: str) -> None:
        """`fn` on every group of `group_col` across `paths`, its results published whole as
        `out_dir` (see `published`)."""
        import ray

        self.start()
        with publish_folder(out_dir) as tmp:
            if not paths:
                return
            metas = store.read_each(lambda p: store.parquet_file(p).metadata, paths)
            rows = sum(m.num_rows for m in metas)
            nbytes = _column_bytes(metas, columns)
            if rows <= self.local_group_max_rows or nbytes <= self.local_group_max_bytes:
                # a shuffle costs seconds of actor start-up and holds several copies of the data
                # in flight; a side table this small is grouped here, through the very same
                # group function (measured: benchmarks/README.md, select)
                _group_locally(paths, columns, group_col, fn, tmp)
                return
            partitions = self.shuffle_partitions(rows, nbytes)
            # one read per side-table file (one part's rows), through the store: Ray Data's parquet
            # reader read all of them in one task, whose peak grew with the input (0.7-0.8 GiB at 2M
            # URL rows, benchmarks/NOTES.md, memory of the metadata stage)
            ds = ray.data.range(len(paths), override_num_blocks=len(paths)) \
                .map_batches(functools.partial(_read_side_tables, paths, columns), batch_size=1, batch_format="pyarrow")
            ds = ds.groupby(group_col, num_partitions=partitions).map_groups(_releasing(fn), batch_format="pyarrow")
            fs, name = store.fs_path(tmp)
            ds.write_parquet(name, filesystem=fs)


@functools.cache
def _part_runner() -> Any:
    """The actor class, made on first use so that importing this module does not import Ray."""
    import ray

    @ray.remote(max_restarts=SYSTEM_RETRIES, max_task_retries=SYSTEM_RETRIES)
    class PartRunner:
        def run(self, fn: Callable[[dict[str, Any]], Any], item: dict[str, Any]) -> Any:
            return _run_part(fn, item)

    return PartRunner


class RayShared:
    def __init__(self, ref: Any):
        self.ref = ref

    def get(self) -> Any:
        import ray

        return ray.get(self.ref)  # numpy arrays come back as zero-copy views of shared memory


def _by_chunk(fn: Callable[[Batch], Batch]) -> Callable[[Batch], Batch]:
    """Batches from the reader may be merged; each reader chunk is processed on its own so results
    never depend on how the engine happened to batch (same input, same output)."""
    def run(batch: Batch) -> Batch:
        if "_chunk" not in batch:
            return fn(batch)
        chunks = batch["_chunk"]
        outs = [fn({k: v[chunks == c] for k, v in batch.items()}) for c in dict.fromkeys(chunks)]
        return {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}
    return run


class _StepActor:
    """One pool worker: the model is set up once and kept for every batch it is given."""

    def __init__(self, step: ModelStep, sink: Callable[[Batch], Batch] | None = None):
        self.step = step
        step.setup()
        self._run = _by_chunk(_then(_timed(step), sink))

    def __call__(self, batch: Batch) -> Batch:
        return self._run(batch)

    def __del__(self) -> None:
        # Ray Data's teardown hook for a callable-class UDF: its map worker drops the UDF in
        # `__ray_shutdown__` when the pool shuts down gracefully (ray 2.60,
        # actor_pool_map_operator.py), which runs this. There is no other engine call for it.
        try:
            self.step.teardown()
        except Exception:  # noqa: BLE001 - teardown at interpreter exit must not raise
            pass


def _then(fn: Callable[[Batch], Batch], sink: Callable[[Batch], Batch] | None) -> Callable[[Batch], Batch]:
    return fn if sink is None else (lambda batch: sink(fn(batch)))


def _timed(step: ModelStep) -> Callable[[Batch], Batch]:
    """The model's time on each row (its call's seconds shared over the call's rows), so the
    stage's statistics carry model time measured where the model ran."""
    def run(batch: Batch) -> Batch:
        t0 = time.perf_counter()
        out = step.process(batch)
        n = len(next(iter(out.values()))) if out else 0
        if n:
            out[seconds_column(step.name)] = np.full(n, (time.perf_counter() - t0) / n)
        return out
    return run


def _column_bytes(metas: list[Any], columns: list[str]) -> int:
    """Uncompressed size of `columns` in parquet files, from their footers."""
    wanted = set(columns)
    total = 0
    for m in metas:
        for i in range(m.num_row_groups):
            rg = m.row_group(i)
            for j in range(rg.num_columns):
                col = rg.column(j)
                if col.path_in_schema.split(".")[0] in wanted:
                    total += col.total_uncompressed_size
    return total


def _read_side_tables(paths: list[Loc], columns: list[str], batch: pa.Table) -> pa.Table:
    """The side-table files a batch of `ray.data.range` ids names."""
    return pa.concat_tables([store.read_parquet(paths[i], columns=columns) for i in batch.column("id").to_pylist()])


def _group_locally(paths: list[Loc], columns: list[str], group_col: str, fn: Callable[[pa.Table], pa.Table],
                   out_dir: Loc) -> None:
    from fusionweave.pipelines.storage.shard_sink import write_parquet

    files = [f.combine_chunks() for f in store.read_each(lambda p: store.read_parquet(p, columns=columns), paths)]
    rows = np.cumsum([0, *(f.num_rows for f in files)])
    if rows[-1] == 0:
        return
    # a stable sort: within a group, rows keep input order, the rows and order a sorted copy gives
    order = pc.sort_indices(pa.chunked_array([f.column(group_col) for f in files])).to_numpy().astype(np.int64)
    values = np.concatenate([f.column(group_col).to_numpy() for f in files])[order]
    starts = np.flatnonzero(np.r_[True, values[1:] != values[:-1]])
    ends = np.r_[starts[1:], len(values)]

    def group(a: int, b: int) -> pa.Table:
        # taken file by file: a take across chunks concatenates them on every call (1.07 of 2.4 s
        # for 200k embeddings in 4 groups), and one combined copy would hold the input twice
        idx = order[a:b]
        cut = np.searchsorted(idx, rows)
        return pa.concat_tables([f.take(idx[cut[i]:cut[i + 1]] - rows[i]) for i, f in enumerate(files)
                                 if cut[i + 1] > cut[i]])

    results = [_releasing(fn)(group(a, b)) for a, b in zip(starts, ends)]
    results = [r for r in results if r.num_rows]
    if results:
        write_parquet(out_dir / "groups.parquet", pa.concat_tables(results))


def _node_check(reads: list[str], out: str) -> str | None:
    for p in reads:
        if not store.exists(p):
            return f"cannot see {p}"
    return store.probe(out)


class PartTimeout(RuntimeError):
    pass


class _Inflight:
    """Submitted parts and how long each has run. A part over `timeout` s is run again (a task:
    cancelled and resubmitted; on a long-lived actor: the actor is restarted, which re-runs what
    it held), up to `attempts` runs in all; then the stage stops with a message. Parts are
    deterministic and write atomically, so a run that was overtaken changes nothing."""

    def __init__(self, timeout: float | None, attempts: int, desc: str, submit: Callable[[int, Any], Any],
                 actor_of: Callable[[int], Any] | None):
        self.timeout, self.attempts, self.desc = timeout, attempts, desc
        self._submit, self.actor_of = submit, actor_of
        self.refs: dict[Any, list[Any]] = {}  # ref -> [n, item, runs, started]

    def __len__(self) -> int:
        return len(self.refs)

    def submit(self, n: int, item: Any, runs: int = 1) -> None:
        self.refs[self._submit(n, item)] = [n, item, runs, time.monotonic()]

    def harvest(self, until: int | None) -> Iterator[Any]:
        """Results as they complete: all that are ready now (`until` None), or until at most
        `until` parts are left in flight."""
        import ray

        while self.refs and (until is None or len(self.refs) > until):
            wait = 0.0 if until is None else None
            if self.timeout and until is not None:
                oldest = min(r[3] for r in self.refs.values())
                wait = max(0.0, oldest + self.timeout - time.monotonic())
            done, _ = ray.wait(list(self.refs), num_returns=1, timeout=wait)
            if done:
                self.refs.pop(done[0])
                yield ray.get(done[0])
                continue
            self._rerun_overdue()
            if until is None:
                return

    def _rerun_overdue(self) -> None:
        import ray

        if not self.timeout:
            return
        now = time.monotonic()
        for ref, (n, item, runs, started) in list(self.refs.items()):
            if now - started < self.timeout:
                continue
            if runs >= self.attempts:
                raise PartTimeout(f"{self.desc}: part {item.get('part', n)} ran over part_timeout_s "
                                  f"({self.timeout:g} s) on each of its {runs} run(s)")
            log.warning("%s: part %s has run %.0f s, over part_timeout_s: running it again", self.desc,
                        item.get("part", n), now - started)
            if self.actor_of is None:
                ray.cancel(ref, force=True)
                self.refs.pop(ref)
                self.submit(n, item, runs + 1)
            else:  # the actor restarts and re-runs every part it held (max_task_retries)
                actor = self.actor_of(n)
                ray.kill(actor, no_restart=False)
                for r in self.refs.values():
                    if self.actor_of(r[0]) is actor:
                        r[3] = now
                self.refs[ref][2] = runs + 1


def _run_part(fn: Callable[[dict[str, Any]], dict[str, Any]], item: dict[str, Any]) -> dict[str, Any]:
    try:
        return fn(item)
    finally:
        _release_memory()


def _release_memory() -> None:
    """Hand freed Arrow buffers back to the OS: a long-lived worker otherwise keeps the peak of
    every task it ever ran, and memory would grow with the input instead of the shard size."""
    gc.collect(1)  # young generations only: a full collection in a worker that imported torch costs ~30 ms
    pa.default_memory_pool().release_unused()


def _releasing(fn: Callable[[pa.Table], pa.Table]) -> Callable[[pa.Table], pa.Table]:
    def wrapped(group: pa.Table) -> pa.Table:
        try:
            return fn(group)
        finally:
            _release_memory()
    return wrapped
