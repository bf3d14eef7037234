"""SemDeDup and representative selection inside one k-means cluster. Pure numpy.

SemDeDup (Abbas et al., 2023) as in its reference code: order the cluster's items by the keep
rule, then item j is a duplicate when some item before it in that order has cosine similarity
> 1 - eps with it; the first of every duplicate group is kept. The pairwise matrix is computed in
blocks, so memory stays at block x block however large the cluster is.
"""
from __future__ import annotations

import zlib

import numpy as np

KEEP_RULES = ("farthest", "nearest", "random")


def seeded_uniform(keys: list[str], seed: int) -> np.ndarray:
    """A reproducible per-key random number that does not depend on which other keys are present."""
    return np.array([zlib.crc32(f"{seed}:{k}".encode("utf-8", "surrogatepass")) for k in keys], np.uint64)


def order_by(rule: str, centroid_sim: np.ndarray, keys: list[str], seed: int) -> np.ndarray:
    """Positions in the order the rule prefers. Ties keep input order (stable sort)."""
    if rule == "farthest":  # least similar to the centroid first
        return np.argsort(centroid_sim, kind="stable")
    if rule == "nearest":
        return np.argsort(-centroid_sim, kind="stable")
    if rule == "random":
        return np.argsort(seeded_uniform(keys, seed), kind="stable")
    raise ValueError(f"unknown rule {rule!r}; expected one of {KEEP_RULES}")


def max_earlier_similarity(emb: np.ndarray, block: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """For each row j: the largest cosine similarity with any row i < j, and that i (-1 for the
    first row). `emb` rows are unit vectors."""
    n = len(emb)
    best = np.full(n, -np.inf, np.float32)
    arg = np.full(n, -1, np.int64)
    e = np.asarray(emb, dtype=np.float32)
    # renormalised in float32: stored float16 vectors are only unit length to ~1e-3, and identical
    # inputs must score exactly 1
    e = np.ascontiguousarray(e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12))
    if 0 < n <= block:  # one block (most clusters): the same numbers in fewer numpy calls
        s = e @ e.T
        s[np.tri(n, dtype=bool)] = -np.inf  # keep only i < j
        best = s.max(axis=0)
        return best, np.where(best > -np.inf, s.argmax(axis=0), -1)
    for c0 in range(0, n, block):
        c1 = min(n, c0 + block)
        cols = e[c0:c1]
        for r0 in range(0, c1, block):
            r1 = min(c1, r0 + block)
            s = e[r0:r1] @ cols.T  # (rows, cols)
            if r1 > c0:  # the block touches the diagonal: keep only i < j
                i = np.arange(r0, r1)[:, None]
                j = np.arange(c0, c1)[None, :]
                s = np.where(i < j, s, -np.inf)
            a = s.argmax(axis=0)
            m = s[a, np.arange(c1 - c0)]
            better = m > best[c0:c1]
            best[c0:c1] = np.where(better, m, best[c0:c1])
            arg[c0:c1] = np.where(better, a + r0, arg[c0:c1])
    return best, arg


def duplicate_roots(max_sim: np.ndarray, argmax: np.ndarray, eps: float) -> np.ndarray:
    """For each row (in keep order): -1 when kept, else the position of the kept row its chain of
    most-similar earlier rows leads to (the original drops j even when its nearest earlier row
    was itself dropped; the reject then names the kept row that chain ends at)."""
    dup = max_sim > 1.0 - eps
    root = np.full(len(dup), -1, np.int64)
    for j in np.flatnonzero(dup):
        i = argmax[j]
        root[j] = i if root[i] < 0 else root[i]
    return root


def duplicates_per_eps(max_sim: np.ndarray, eps_values: list[float]) -> dict[float, int]:
    return {eps: int((max_sim > 1.0 - eps).sum()) for eps in eps_values}
