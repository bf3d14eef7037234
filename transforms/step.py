"""The one step contract every engine runs: a batch (pyarrow Table) in, a batch out.

Steps never drop rows themselves. A step that refuses rows fills the reject columns
(`_reject_step`, `_reject_reason`, `_reject_detail`); `StepChain` moves those rows aside and
counts them, so per-step statistics are collected in one place and never by the steps.
"""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

REJECT_STEP = "_reject_step"
REJECT_REASON = "_reject_reason"
REJECT_DETAIL = "_reject_detail"
REJECT_COLUMNS = (REJECT_STEP, REJECT_REASON, REJECT_DETAIL)
# step and reason hold a few distinct names over millions of rows: dictionary-encoded, the chain
# names its rejected rows with an index gather (a string gather cost it 15% of a 5M-row filter).
# Writers cast them to strings (`shard_sink.rejects_table`), so the files on disk are unchanged.
# Indices are as narrow as the names allow: 4M rejected rows take a 4 MB int8 view of the chain's codes,
# where int32 indices were two fresh 16 MB gathers per split (their page faults alone cost a 5M-row
# filter up to 25%). Any dictionary of strings is a label; a string column is encoded with int32.
LABEL = pa.dictionary(pa.int8(), pa.string())
WIDE_LABEL = pa.dictionary(pa.int32(), pa.string())
REJECT_TYPES = {REJECT_STEP: LABEL, REJECT_REASON: LABEL, REJECT_DETAIL: pa.string()}
Mask = np.ndarray | pa.Array | pa.ChunkedArray  # booleans, one per row; a null does not hold


@dataclass
class StepStats:
    """Counts of one step over any number of batches; adding two merges them."""

    rows_in: int = 0
    rows_out: int = 0
    rejects: Counter = field(default_factory=Counter)
    seconds: float = 0.0

    def add(self, other: "StepStats") -> None:
        self.rows_in += other.rows_in
        self.rows_out += other.rows_out
        self.rejects.update(other.rejects)
        self.seconds += other.seconds

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows_in": self.rows_in,
            "rows_out": self.rows_out,
            "rejects": dict(sorted(self.rejects.items())),
            "seconds": round(self.seconds, 4),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "StepStats":
        return cls(d["rows_in"], d["rows_out"], Counter(d.get("rejects", {})), float(d.get("seconds", 0.0)))


def merge_stats(into: dict[str, StepStats], more: dict[str, StepStats]) -> dict[str, StepStats]:
    """Merge per-step stats keeping the first-seen step order."""
    for name, st in more.items():
        into.setdefault(name, StepStats()).add(st)
    return into


def stats_to_json(stats: dict[str, StepStats]) -> dict[str, dict[str, Any]]:
    return {name: st.to_dict() for name, st in stats.items()}


def stats_from_json(d: dict[str, dict[str, Any]]) -> dict[str, StepStats]:
    return {name: StepStats.from_dict(v) for name, v in d.items()}


class Step:
    """A pure transformation of a batch. Subclasses implement `process`.

    `process` may add or replace columns and may mark rows as rejected with `reject(...)`,
    but must return exactly the rows it was given, in the same order.
    """

    name: str = "step"

    def process(self, batch: pa.Table) -> pa.Table:  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class Filter(Step):
    """A step that only decides which rows to refuse. Implement either `reasons` (one entry per
    row: None to keep, else a short machine-readable reason) or, for speed, `masks` (a list of
    (reason, boolean mask, numpy or Arrow, where null does not hold); the first mask that holds
    for a row names its reason)."""

    def reasons(self, batch: pa.Table) -> Sequence[str | None] | pa.Array:
        out = pa.nulls(batch.num_rows, pa.string())
        for reason, mask in reversed(self.masks(batch)):
            out = pc.if_else(_bitmap(mask, batch.num_rows, self.name), pa.scalar(reason, pa.string()), out)
        return out

    def masks(self, batch: pa.Table) -> list[tuple[str, Mask]]:
        r = self.reasons(batch)
        arr = r if isinstance(r, (pa.Array, pa.ChunkedArray)) else pa.array(r, pa.string())
        if len(arr) != batch.num_rows:
            raise ValueError(f"step {self.name!r} returned {len(arr)} reasons for {batch.num_rows} rows")
        enc = pc.dictionary_encode(arr.cast(pa.string()))
        if isinstance(enc, pa.ChunkedArray):
            enc = enc.combine_chunks()
        idx = enc.indices.to_numpy(zero_copy_only=False)
        valid = enc.is_valid().to_numpy(zero_copy_only=False)
        return [(v, valid & (idx == i)) for i, v in enumerate(enc.dictionary.to_pylist())]

    def details(self, batch: pa.Table) -> Sequence[str | None] | None:
        return None

    def process(self, batch: pa.Table) -> pa.Table:
        return reject(batch, self.name, self.reasons(batch), self.details(batch))


def reject(
    batch: pa.Table,
    step: str,
    reasons: Sequence[str | None] | pa.Array,
    details: Sequence[str | None] | pa.Array | None = None,
) -> pa.Table:
    """Mark rows as rejected by `step`. Rows already rejected keep their first reason."""
    n = batch.num_rows
    reasons_arr = pa.array(reasons, type=pa.string()) if not isinstance(reasons, pa.Array) else reasons.cast(pa.string())
    if len(reasons_arr) != n:
        raise ValueError(f"step {step!r} returned {len(reasons_arr)} reasons for {n} rows")
    if details is None:
        details_arr = pa.nulls(n, pa.string())
    else:
        details_arr = pa.array(details, type=pa.string()) if not isinstance(details, pa.Array) else details.cast(pa.string())
    batch = ensure_reject_columns(batch)
    already = pc.is_valid(batch.column(REJECT_REASON))
    new = pc.and_(pc.invert(already), pc.is_valid(reasons_arr))
    step_col = pc.if_else(new, pa.scalar(step, pa.string()), batch.column(REJECT_STEP).cast(pa.string()))
    reason_col = pc.if_else(new, reasons_arr, batch.column(REJECT_REASON).cast(pa.string()))
    detail_col = pc.if_else(new, details_arr, batch.column(REJECT_DETAIL))
    for name, col in ((REJECT_STEP, step_col), (REJECT_REASON, reason_col), (REJECT_DETAIL, detail_col)):
        batch = batch.set_column(batch.schema.get_field_index(name), name, _typed(name, col))
    return batch


def ensure_reject_columns(batch: pa.Table) -> pa.Table:
    """The three reject columns, of their types (all null where a column was missing)."""
    for name in REJECT_COLUMNS:
        if name not in batch.column_names:
            batch = batch.append_column(name, pa.nulls(batch.num_rows, REJECT_TYPES[name]))
        elif not _is_typed(name, batch.schema.field(name).type):  # e.g. read back from a file written as strings
            batch = batch.set_column(batch.schema.get_field_index(name), name, _typed(name, batch.column(name)))
    return batch


def is_label(t: pa.DataType) -> bool:
    return pa.types.is_dictionary(t) and pa.types.is_string(t.value_type)


def _is_typed(name: str, t: pa.DataType) -> bool:
    return is_label(t) if name != REJECT_DETAIL else t == REJECT_TYPES[name]


def _typed(name: str, col: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    if _is_typed(name, col.type):
        return col
    if name != REJECT_DETAIL:
        return pc.dictionary_encode(col.cast(pa.string()))
    return col.cast(REJECT_TYPES[name])


def split_rejects(batch: pa.Table) -> tuple[pa.Table, pa.Table]:
    """(kept rows without reject columns, rejected rows with them)."""
    batch = ensure_reject_columns(batch)
    mask = pc.is_valid(batch.column(REJECT_REASON))
    kept = batch.filter(pc.invert(mask)).drop_columns(list(REJECT_COLUMNS))
    return kept, batch.filter(mask)


class StepChain:
    """Runs steps in order, moving rejected rows aside and timing each step.

    This is where the automatic statistics live: every step gets rows in/out, rejects by
    reason and seconds without writing a line of bookkeeping itself. Filters share one Arrow
    "alive" bitmap and the batch is compacted only before a transforming step and at the end,
    so a chain of vectorised filters costs little more than the bare predicates.
    """

    def __init__(self, steps: Iterable[Step]):
        self.steps = list(steps)
        names = [s.name for s in self.steps]
        if len(set(names)) != len(names):
            raise ValueError(f"step names must be unique in a chain, got {names}")

    def __call__(self, batch: pa.Table) -> tuple[pa.Table, pa.Table, dict[str, StepStats]]:
        stats: dict[str, StepStats] = {}
        rejected: list[pa.Table] = []
        state = _RejectState(batch)
        for step in self.steps:
            t0 = time.perf_counter()
            st = StepStats(rows_in=state.alive_count())
            if isinstance(step, Filter):
                if st.rows_in:
                    details = step.details(state.batch)
                    for reason, mask in step.masks(state.batch):
                        n = state.mark(step.name, reason, mask, details)
                        if n:
                            st.rejects[reason] += n
            else:
                kept, rej = state.split()
                if rej.num_rows:
                    rejected.append(rej)
                if kept.num_rows:
                    out = step.process(kept)
                    if out.num_rows != kept.num_rows:
                        raise RuntimeError(f"step {step.name!r} changed the row count; steps reject, they never drop")
                    kept, rej = split_rejects(out)
                    if rej.num_rows:
                        st.rejects.update(rej.column(REJECT_REASON).to_pylist())
                        rejected.append(rej)
                state = _RejectState(kept)
            st.rows_out = st.rows_in - sum(st.rejects.values())
            st.seconds = time.perf_counter() - t0
            stats[step.name] = st
        kept, rej = state.split()
        rejected.append(rej)
        return kept, concat_tables(rejected), stats


class _RejectState:
    """Which rows of a batch are still alive, and why the others were refused (as small int
    codes, turned into names only for the rejected rows). Kept in Arrow arrays: a bitmap per mask
    and pooled buffers, where numpy temporaries of a 5M-row batch are fresh pages on every call."""

    def __init__(self, batch: pa.Table):
        self.batch = batch.drop_columns([c for c in REJECT_COLUMNS if c in batch.column_names])
        n = batch.num_rows
        self.alive = pa.repeat(pa.scalar(True), n)
        self.alive_n = n
        self.planes: list[pa.BooleanArray] = []  # bit j of each row's label index, as a bitmap
        self.labels: list[tuple[str, str]] = [("", "")]
        self.detail: np.ndarray | None = None

    def alive_count(self) -> int:
        return self.alive_n

    def mark(self, step: str, reason: str, mask: Mask, details: Sequence[str | None] | None) -> int:
        new = pc.and_(_bitmap(mask, len(self.alive), step), self.alive)
        n = new.true_count
        if n:
            # A label index is set as bits: one bitmap `or` per set bit (a byte array per label,
            # cast, multiplied and added, cost 7 ms per mask on 5M rows; this costs 0.2).
            label = len(self.labels)
            self.labels.append((step, reason))
            top = label.bit_length() - 1  # labels count up by one, so a new plane is this label's top bit
            if top == len(self.planes):
                self.planes.append(new)
            for j in range(top + 1):
                if label >> j & 1 and self.planes[j] is not new:
                    self.planes[j] = pc.or_(self.planes[j], new)
            self.alive = pc.and_not(self.alive, new)
            self.alive_n -= n
            if details is not None:
                if self.detail is None:
                    self.detail = np.full(len(self.alive), None, dtype=object)
                rows = new.to_numpy(zero_copy_only=False)
                self.detail[rows] = np.asarray(details, dtype=object)[rows]
        return n

    def split(self) -> tuple[pa.Table, pa.Table]:
        if self.alive_n == len(self.alive):
            return self.batch, ensure_reject_columns(self.batch.slice(0, 0))
        dead = pc.invert(self.alive)
        kept = self.batch.filter(self.alive)
        # The codes ride in the rejected rows' filter: a table filter turns its mask into row indices
        # once for all its columns, where a filter of the codes on their own scanned the mask again.
        rej = self.batch.append_column(_CODES, self._codes()).filter(dead)
        codes = rej.column(_CODES)
        rej = rej.drop_columns([_CODES])
        width = _index_type(len(self.labels))
        same = pa.chunked_array([c.view(width) for c in codes.chunks], width) if width == pa.int8() \
            else codes.cast(width)  # bytes below 128 are the same int8s: a view, not a copy
        for i, name in ((0, REJECT_STEP), (1, REJECT_REASON)):
            names = [lab[i] for lab in self.labels]
            if len(set(names)) == len(names):  # each label its own name: the codes index them as they are
                index = same
            else:  # one entry per distinct name (grouping needs that), and each label's index into them
                distinct = sorted(set(names))
                at = {n: j for j, n in enumerate(distinct)}
                index, names = pc.take(pa.array([at[n] for n in names], width), codes), distinct
            values = pa.array(names, pa.string())
            rej = rej.append_column(name, pa.chunked_array(  # safe=False: every index was built in range above
                [pa.DictionaryArray.from_arrays(c, values, safe=False) for c in index.chunks],
                pa.dictionary(width, pa.string())))
        det = pa.array(self.detail[~self.alive.to_numpy(zero_copy_only=False)], pa.string()) \
            if self.detail is not None else pa.nulls(rej.num_rows, pa.string())
        return kept, rej.append_column(REJECT_DETAIL, det)

    def _codes(self) -> pa.Array:
        """Each row's label index (0: alive), from the bit planes. numpy unpacks a bitmap into bytes
        in one pass, where Arrow filters bytes 2.5x faster than a bitmap."""
        codes = np.zeros(len(self.alive), np.uint8)  # no plane: nothing was refused
        for j, plane in enumerate(self.planes):
            bits = np.unpackbits(np.frombuffer(plane.buffers()[1], np.uint8), count=plane.offset + len(plane),
                                 bitorder="little")[plane.offset:]
            if len(self.planes) > 8:  # past 255 labels
                bits = bits.astype(np.uint32)
            codes = bits if j == 0 else np.bitwise_or(codes, np.left_shift(bits, j, out=bits), out=codes)
        return pa.array(codes)


_CODES = "__fusionweave_label_codes"


def _index_type(names: int) -> pa.DataType:
    """The narrowest dictionary index type for `names` entries."""
    return next(t for t in (pa.int8(), pa.int16(), pa.int32()) if names <= 1 << (t.bit_width - 1))


def _bitmap(mask: Mask, n: int, step: str) -> pa.BooleanArray:
    """A filter's mask as one Arrow boolean array without nulls (a null does not hold)."""
    if isinstance(mask, pa.ChunkedArray):
        mask = mask.combine_chunks() if mask.num_chunks != 1 else mask.chunk(0)
    elif not isinstance(mask, pa.Array):
        mask = pa.array(np.asarray(mask, dtype=bool))
    if len(mask) != n or not pa.types.is_boolean(mask.type):
        raise ValueError(f"step {step!r} returned a mask of {len(mask)} {mask.type} values for {n} rows")
    return pc.fill_null(mask, False) if mask.null_count else mask


def concat_tables(tables: list[pa.Table]) -> pa.Table:
    """Reject tables joined. Each table's names fit its own narrow label indices, their union may not
    (unifying the dictionaries would then fail), so labels are widened where two tables hold some."""
    labelled = [t for t in tables if REJECT_REASON in t.column_names and t.column(REJECT_REASON).null_count < len(t)]
    if len(labelled) > 1:
        tables = [_wide_labels(t) for t in tables]
    return pa.concat_tables(tables, promote_options="permissive")


def _wide_labels(t: pa.Table) -> pa.Table:
    for name in (REJECT_STEP, REJECT_REASON):
        if name in t.column_names and t.schema.field(name).type != WIDE_LABEL:
            t = t.set_column(t.schema.get_field_index(name), name, _typed(name, t.column(name)).cast(WIDE_LABEL))
    return t

