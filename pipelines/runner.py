"""The one stage runner: parts, resume, accounting, the manifest entry, atomic writes, `_stats.json`.

A stage is declared (`Stage`): its upstream stage by name, a planner that cuts the parts, the
work done on each part (a CPU function, or a reader, a model chain and a finish) and what its
`_stats.json` records beside the counts. A part's work says what happened in a `PartResult`:
the rows it read, its rejects (each naming its step and reason), the seconds of each step and
what it keeps. The runner, in the worker that did the work, writes the shard and the rejects
and derives every step's statistics from them, so no stage counts by hand and the counts always
agree with the rows on disk. The driver only collects the part records.

Resume: each part writes its outputs atomically and deterministically, then commits by creating
its part record (once: a late duplicate finds it and changes nothing). A rerun skips parts with
a record and redoes the rest, so a kill at any moment ends, after the rerun, with exactly the
uninterrupted result. The stage commits by writing its manifest, then `_stats.json`.
"""
from __future__ import annotations

import logging
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping, Sequence

import pyarrow as pa
from tqdm import tqdm

from fusionweave.pipelines.chunks import PART, ROWS, SENT, ChunkSpill
from fusionweave.pipelines.engine import Batch, Engine, ModelEngine
from fusionweave.pipelines.errors import BuildSetupError
from fusionweave.pipelines.storage import store
from fusionweave.pipelines.storage.build_folder import PartEntry, StageFolder
from fusionweave.pipelines.storage.location import Loc
from fusionweave.transforms.step import REJECT_REASON, REJECT_STEP, StepStats

if TYPE_CHECKING:
    from fusionweave.experts.base import ChainItem, ModelStep

log = logging.getLogger(__name__)

FINISHERS = 2  # long-lived workers that write the model stages' shards


@dataclass
class PartResult:
    """What one part's work did. `rejects` is a rejects table (columns `step`, `reason`, ...) or
    a table still carrying the chain's reject columns; `handed_on` counts rows this part passes
    to other parts of the same stage (a planning part), so they are counted in once."""

    rows_in: int
    steps: Sequence[str]
    rejects: pa.Table | None = None
    seconds: Mapping[str, float] = field(default_factory=dict)
    samples: Iterable[dict[str, Any]] | None = None  # a WebDataset shard ...
    table: pa.Table | None = None  # ... or a parquet one
    name: str | None = None  # the shard's file name
    count: int | None = None  # rows kept when they go elsewhere than a shard
    handed_on: int = 0
    inputs: Sequence[str] | None = None  # default: the part's `input`
    rejects_name: str | None = None
    keep_rejects: bool = True  # False: counted, not written (a pass whose rejects the final pass writes)
    extra: dict[str, Any] = field(default_factory=dict)


class AccountingError(RuntimeError):
    """A part's counts do not add up: a bug in its stage, never bad input."""


def reject_counts(rejects: pa.Table | None) -> Counter:
    """(step, reason) -> rows, from a rejects table or a table with the chain's reject columns."""
    if rejects is None or rejects.num_rows == 0:
        return Counter()
    cols = [REJECT_STEP, REJECT_REASON] if REJECT_STEP in rejects.column_names else ["step", "reason"]
    counts = rejects.select(cols).unify_dictionaries().group_by(cols, use_threads=False).aggregate([([], "count_all")])
    return Counter(dict(zip(zip(*(counts.column(c).to_pylist() for c in cols)), counts.column("count_all").to_pylist())))


def account(rows_in: int, steps: Sequence[str], rejects: Counter, seconds: Mapping[str, float]) -> dict[str, StepStats]:
    """Every step's rows in/out, rejects by reason and seconds: the rows a step gets are those
    the step before it let through."""
    unknown = sorted({s for s, _ in rejects} - set(steps))
    if unknown:
        raise AccountingError(f"rejects name steps {unknown} that are not among the part's steps {list(steps)}")
    stats: dict[str, StepStats] = {}
    alive = rows_in
    for step in steps:
        st = StepStats(rows_in=alive, rejects=Counter({r: n for (s, r), n in rejects.items() if s == step}),
                       seconds=float(seconds.get(step, 0.0)))
        st.rows_out = alive - sum(st.rejects.values())
        if st.rows_out < 0:
            raise AccountingError(f"step {step!r} rejected {sum(st.rejects.values())} of {alive} rows")
        stats[step] = st
        alive = st.rows_out
    return stats


def commit_part(folder: StageFolder, part: dict[str, Any], result: PartResult,
                seconds: float | None = None) -> PartEntry:
    """A part's outputs written atomically (shard, rejects), then its record created: the entry
    that stands is returned. `seconds`, the part's wall time, goes to its only step when it
    timed none itself."""
    timed = dict(result.seconds)
    if not timed and seconds is not None and result.steps:
        timed[result.steps[-1]] = seconds
    stats = account(result.rows_in, result.steps, reject_counts(result.rejects), timed)
    rejects = result.rejects if result.keep_rejects else None
    written = folder.write_part(part["part"], name=result.name, samples=result.samples, table=result.table,
                                rejects=rejects, rejects_name=result.rejects_name)
    kept = written.count if result.name is not None and (result.samples is not None or result.table is not None) \
        else (result.count or 0)
    passed = next(reversed(stats.values())).rows_out if stats else result.rows_in
    if passed != kept + result.handed_on:
        raise AccountingError(f"{folder.stage} part {part['part']}: {passed} rows passed every step but "
                              f"{kept + result.handed_on} were kept")
    inputs = result.inputs if result.inputs is not None else ([part["input"]] if "input" in part else [])
    n_rejected = result.rejects.num_rows if result.rejects is not None else 0
    return folder.record(PartEntry(part["part"], result.rows_in - result.handed_on, n_rejected, stats,
                                   [str(i) for i in inputs], written.shard, kept, written.bytes, written.sha256,
                                   written.rejects, dict(result.extra)))


def timed_commit(folder: StageFolder, work: Callable[[dict[str, Any]], PartResult]
                 ) -> Callable[[dict[str, Any]], PartEntry]:
    """`work` then `commit_part`, as one worker task; a part already recorded (this run is a
    duplicate: a straggler's twin, a retried task) is left as it stands."""
    def run(part: dict[str, Any]) -> PartEntry:
        if (done := folder.recorded(part["part"])) is not None:
            return done
        t0 = time.perf_counter()
        result = work(part)
        return commit_part(folder, part, result, time.perf_counter() - t0)
    return run


def _resume(folder: StageFolder, parts: list[dict[str, Any]], desc: str
            ) -> tuple[dict[str, PartEntry], list[dict[str, Any]]]:
    folder.prepare()
    wanted = {p["part"] for p in parts}
    done = {k: v for k, v in folder.entries().items() if k in wanted}
    if done:
        log.info("%s: %d of %d parts already done, resuming", desc, len(done), len(parts))
    return done, [p for p in parts if p["part"] not in done]


def _collect(entries: Iterator[PartEntry], done: dict[str, PartEntry], total: int,
             desc: str, progress: bool) -> dict[str, PartEntry]:
    with tqdm(total=total, initial=len(done), desc=desc, unit="shard", disable=not progress,
              dynamic_ncols=True, leave=False) as bar:
        for entry in entries:  # recorded by the worker that did the part
            done[entry.part] = entry
            bar.update(1)
    return done


def run_parts(engine: Engine, folder: StageFolder, parts: list[dict[str, Any]],
              work: Callable[[dict[str, Any]], PartResult], *, num_cpus: float, desc: str,
              progress: bool = True) -> dict[str, PartEntry]:
    """One worker task per part not yet in the manifest: `work`, then its commit."""
    done, todo = _resume(folder, parts, desc)
    entries = engine.map_partitions(todo, timed_commit(folder, work), num_cpus=num_cpus, desc=desc)
    done = _collect(entries, done, len(parts), desc, progress)
    missing = {p["part"] for p in parts} - set(done)
    if missing:
        raise RuntimeError(f"{desc}: parts {sorted(missing)[:5]} produced no result")
    return done


Finish = Callable[[dict[str, Any], Batch], PartResult]


def _finisher(folder: StageFolder, spill: ChunkSpill, finish: Finish) -> Callable[[dict[str, Any]], PartEntry]:
    def run(part: dict[str, Any]) -> PartEntry:
        t0 = time.perf_counter()
        rows = spill.load(part["part"])
        got = len(next(iter(rows.values()))) if rows else 0
        if got != part[SENT]:
            raise RuntimeError(f"part {part['part']}: {got} rows on disk, {part[SENT]} came from the model")
        part = {k: v for k, v in part.items() if k != SENT}
        entry = commit_part(folder, part, finish(part, rows), time.perf_counter() - t0)
        spill.clear(part["part"])  # a rerun redoes a part whose line is missing, from its reader
        return entry
    return run


def run_model_parts(engine: ModelEngine, folder: StageFolder, parts: list[dict[str, Any]],
                    read: Callable[[dict[str, Any]], Iterator[Batch]], chain: "ModelStep | Sequence[ChainItem]",
                    finish: Finish, *, read_cpus: float, desc: str, drop: Sequence[str] = (),
                    progress: bool = True) -> dict[str, PartEntry]:
    """Readers stream each part as chunks (see `chunks`); the chain's model steps run as pools;
    the last step's worker spills each processed chunk to the work folder; once all of a part's
    chunks are there a worker runs `finish(part, rows)` and commits the part. The driver holds
    counts, never rows. `finish` runs in a worker: it must not rely on driver state."""
    done, todo = _resume(folder, parts, desc)
    wanted = {p["part"]: p for p in parts}
    spill = ChunkSpill(folder.work, drop)
    for p in todo:
        spill.clear(p["part"])  # chunks of a killed run: the part is read again whole

    def complete_parts() -> Iterator[dict[str, Any]]:
        received: dict[str, int] = defaultdict(int)
        totals: dict[str, int] = {}
        started: set[str] = set()
        for batch in engine.map_with_model(todo, read, chain, read_cpus=read_cpus, desc=desc, sink=spill):
            for p, last, n in zip(batch[PART], batch[ROWS], batch[SENT]):
                received[p] += int(n)
                if last >= 0:
                    totals[p] = int(last)
                if totals.get(p) == received[p] and p not in started:
                    started.add(p)
                    yield {**wanted[p], SENT: received[p]}
        # parts that sent no rows at all (every sample rejected) finish here
        for p in [p["part"] for p in todo if p["part"] not in started]:
            if received.get(p, 0) != totals.get(p, 0):
                raise RuntimeError(f"{desc}: part {p} sent {received.get(p, 0)} rows, expected {totals.get(p)}")
            yield {**wanted[p], SENT: 0}

    # finishing workers start with the stage, not after its last chunk
    entries = engine.map_stream(complete_parts(), _finisher(folder, spill, finish), num_cpus=read_cpus, desc=desc,
                                workers=min(len(todo), FINISHERS))
    return _collect(entries, done, len(parts), desc, progress)


@dataclass
class ModelWork:
    """A model stage's work: `read` streams each part as chunks, `chain` (model steps as pools,
    plain callables as CPU tasks) processes them, `finish` turns a part's rows into its result.
    `drop`: columns the finish does not need back (image bytes it reads again from the input)."""

    read: Callable[[dict[str, Any]], Iterator[Batch]]
    chain: "ModelStep | Sequence[ChainItem]"
    finish: Finish
    read_cpus: float = 0.5
    drop: Sequence[str] = ()
    takes: Callable[[dict[str, Any]], bool] | None = None  # which parts need the model (default: all)
    desc: str | None = None  # its progress label, when the stage has CPU parts too


class UpstreamIncomplete(BuildSetupError):
    pass


@dataclass
class Stage:
    """One declared stage: `work` (a CPU function per part), `model`, or both (the parts the
    model `takes` go through it, the rest through `work`).

    `upstream`: the stage of the same build folder it reads, by name; it must be complete.
    `plan`: the parts, called once the upstream is known complete.
    `prepare`: whole-stage passes before the parts (k-means training, global dedup groupings);
    it returns the entries of any part it committed itself (`commit_part`, then appended).
    `conclude`: runs once every part is done: writes what spans the parts (exports, indexes) and
    returns what `_stats.json` records beside the counts.
    """

    name: str
    plan: Callable[[], list[dict[str, Any]]]
    work: Callable[[dict[str, Any]], PartResult] | None = None
    model: ModelWork | None = None
    upstream: str | None = None
    prepare: Callable[[StageFolder], dict[str, PartEntry] | None] | None = None
    conclude: Callable[[dict[str, PartEntry]], dict[str, Any]] | None = None
    cpus: float = 0.5
    desc: str | None = None
    # counts the engine measured itself (Beam metrics), checked against the manifest's; given the
    # entries and which of them an earlier run had finished
    engine_steps: Callable[[dict[str, PartEntry], set[str]], dict[str, StepStats] | None] | None = None


def check_upstream(out: Loc, stage: str, upstream: str) -> StageFolder:
    folder = StageFolder(out, upstream)
    if not folder.is_complete():
        state = "did not finish" if store.exists(folder.dir) else "does not exist"
        raise UpstreamIncomplete(f"{stage}: it reads the `{upstream}` stage of {out}, which {state}; "
                                 f"rerun the build to complete `{upstream}` first")
    return folder


def run_stage(engine: Engine, out: Loc, stage: Stage, progress: bool = True) -> dict[str, Any]:
    """Run `stage` in the build folder `out` (resuming it), write its `_stats.json` and return it."""
    folder = StageFolder(out, stage.name)
    if folder.is_complete():
        return folder.stats()
    if stage.upstream is not None:
        check_upstream(out, stage.name, stage.upstream)
    if stage.work is None and stage.model is None:
        raise TypeError(f"stage {stage.name!r} declares neither `work` nor `model`")
    t0 = time.perf_counter()
    folder.prepare()
    entries = (stage.prepare(folder) if stage.prepare is not None else None) or {}
    parts = stage.plan()
    earlier = set(folder.entries())
    desc = stage.desc or stage.name
    m = stage.model
    by_model = [p for p in parts if m is not None and (m.takes is None or m.takes(p))]
    modelled = {p["part"] for p in by_model}
    by_work = [p for p in parts if p["part"] not in modelled]
    if by_work:
        if stage.work is None:
            raise TypeError(f"stage {stage.name!r}: parts {[p['part'] for p in by_work[:3]]} need a `work`")
        entries.update(run_parts(engine, folder, by_work, stage.work, num_cpus=stage.cpus, desc=desc,
                                 progress=progress))
    if by_model:
        assert m is not None
        entries.update(run_model_parts(engine, folder, by_model, m.read, m.chain, m.finish, read_cpus=m.read_cpus,
                                       desc=m.desc or desc,
                                       drop=m.drop, progress=progress))
    info = stage.conclude(entries) if stage.conclude is not None else None
    steps = stage.engine_steps(entries, earlier) if stage.engine_steps is not None else None
    return folder.finish(entries.values(), time.perf_counter() - t0, info=info, steps=steps)
