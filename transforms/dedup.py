"""Dedup decisions over a table of (ord, key, value) rows: pure numpy/pyarrow, no engine.

Rule everywhere: within a duplicate group the row that came first in the input (lowest
`ord`) is kept, so Ray, Beam and a rerun all keep the same row. The engines only decide how
rows are grouped (hash buckets, hash bands) before these functions run on each group.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

DUP_SCHEMA = pa.schema([("ord", pa.int64()), ("reason", pa.string()), ("dup_of", pa.string()), ("dup_of_ord", pa.int64())])


def empty_dups() -> pa.Table:
    return DUP_SCHEMA.empty_table()


def exact_duplicates(group: pa.Table, value_col: str, reason: str) -> pa.Table:
    """Rows whose `value_col` equals an earlier row's. Returns (ord, reason, dup_of key).
    Vectorised: one sort, then each row is compared with its predecessor."""
    n = group.num_rows
    if n < 2:
        return empty_dups()
    t = group.select(["ord", "key", value_col]).sort_by([(value_col, "ascending"), ("ord", "ascending")])
    v = t.column(value_col)
    if pa.types.is_null(v.type):
        return empty_dups()
    same = pc.fill_null(pc.equal(v.slice(1), v.slice(0, n - 1)), False).to_numpy(zero_copy_only=False)
    is_dup = np.concatenate([[False], same])
    if not is_dup.any():
        return empty_dups()
    run_first = np.flatnonzero(~is_dup)[np.cumsum(~is_dup) - 1]  # index of each row's run leader
    dup_idx = np.flatnonzero(is_dup)
    first_idx = run_first[dup_idx]
    ords = t.column("ord").to_numpy()
    return _dups(ords[dup_idx], reason, t.column("key").take(pa.array(first_idx)).to_pylist(), ords[first_idx])


def _dups(ords: list[int] | np.ndarray, reason: str, dup_of: list[str], dup_of_ord: list[int] | np.ndarray) -> pa.Table:
    return pa.table({"ord": pa.array(ords, pa.int64()), "reason": pa.array([reason] * len(dup_of), pa.string()),
                     "dup_of": pa.array(dup_of, pa.string()), "dup_of_ord": pa.array(dup_of_ord, pa.int64())},
                    schema=DUP_SCHEMA)


def band_values(hashes: np.ndarray, threshold: int, bits: int = 64) -> list[np.ndarray]:
    """Split each hash into threshold+1 bands. Two hashes within Hamming distance `threshold`
    agree exactly on at least one band (pigeonhole), so grouping by (band, value) finds every
    candidate pair without comparing all pairs."""
    n_bands = threshold + 1
    edges = np.linspace(0, bits, n_bands + 1).astype(int)
    h = hashes.astype(np.uint64)
    out = []
    for b in range(n_bands):
        width = int(edges[b + 1] - edges[b])
        mask = np.uint64((1 << width) - 1)
        out.append((h >> np.uint64(edges[b])) & mask)
    return out


def near_duplicates(group: pa.Table, hash_col: str, threshold: int, reason: str, block: int = 2048) -> pa.Table:
    """Rows with an earlier row (lower ord) within Hamming distance `threshold` of its 64-bit hash.
    `dup_of` names the earliest such row. Compared in blocks so memory stays bounded."""
    if group.num_rows < 2:
        return empty_dups()
    t = group.select(["ord", "key", hash_col]).sort_by("ord")
    h = t.column(hash_col).to_numpy().astype(np.uint64)
    ords = t.column("ord").to_numpy()
    keys = t.column("key").to_pylist()
    n = len(h)
    earliest = np.full(n, -1, dtype=np.int64)
    for start in range(1, n, block):
        stop = min(n, start + block)
        rows = h[start:stop]
        # only earlier rows can be the kept one: compare block rows against h[:stop]
        x = np.bitwise_xor(rows[:, None], h[None, :stop])
        dist = np.unpackbits(x.view(np.uint8).reshape(x.shape[0], x.shape[1], 8), axis=2).sum(axis=2)
        idx = np.arange(start, stop)[:, None]
        ok = (dist <= threshold) & (np.arange(stop)[None, :] < idx)
        has = ok.any(axis=1)
        first = np.where(has, ok.argmax(axis=1), -1)
        earliest[start:stop] = first
    sel = np.nonzero(earliest >= 0)[0]
    return _dups(ords[sel], reason, [keys[j] for j in earliest[sel]], ords[earliest[sel]])


def earliest_per_ord(dups: pa.Table) -> pa.Table:
    """A row found through several bands keeps one entry: the one naming the earliest row."""
    if dups.num_rows == 0:
        return dups
    t = dups.sort_by([("ord", "ascending"), ("dup_of_ord", "ascending")])
    ords = t.column("ord").to_numpy()
    keep = np.ones(len(ords), bool)
    keep[1:] = ords[1:] != ords[:-1]
    return t.filter(pa.array(keep))
