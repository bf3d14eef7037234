"""SemDeDup, keep rules, top-N and k-means on synthetic embeddings with known structure."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from fusionweave.pipelines.select.choose import DUPLICATE, NOT_SELECTED, decide_cluster
from fusionweave.pipelines.select.config import SelectConfig
from fusionweave.pipelines.select.embed import side_table
from fusionweave.transforms import kmeans
from fusionweave.transforms.semdedup import duplicate_roots, duplicates_per_eps, max_earlier_similarity, order_by


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def planted_cluster(rng: np.random.Generator, n_base: int = 40, d: int = 256) -> tuple[np.ndarray, dict[int, tuple[int, float]]]:
    """Random base vectors (pairwise cosine ~ N(0, 1/sqrt(d)), far below any eps tested) plus
    copies of some bases at exact cosine similarities. Returns vectors and {copy: (base, cos)}."""
    base = unit(rng.normal(size=(n_base, d)))
    vecs = [*base]
    planted: dict[int, tuple[int, float]] = {}
    for b, c in [(0, 0.999), (1, 0.97), (2, 0.85), (3, 0.999), (3, 0.99)]:
        u = rng.normal(size=d)
        u = unit(u - (u @ base[b]) * base[b])  # orthogonal to the base
        planted[len(vecs)] = (b, c)
        vecs.append(c * base[b] + np.sqrt(1 - c * c) * u)
    return np.array(vecs), planted


def test_blocked_max_matches_full_matrix() -> None:
    rng = np.random.default_rng(0)
    e = unit(rng.normal(size=(53, 16))).astype(np.float32)
    full = e @ e.T
    want = [(-np.inf, -1)] + [(full[:j, j].max(), int(full[:j, j].argmax())) for j in range(1, 53)]
    for block in (1, 7, 16, 53, 4096):
        m, a = max_earlier_similarity(e, block)
        assert np.allclose(m[1:], [w[0] for w in want[1:]], atol=1e-6) and m[0] == -np.inf
        assert a.tolist() == [w[1] for w in want]


@pytest.mark.parametrize("eps,expected", [
    (0.005, {40: 0, 43: 3}),                          # only the 0.999 copies
    (0.02, {40: 0, 43: 3, 44: 3}),                    # + the 0.99 copy (and 43 vs 44: cos ~0.98)
    (0.05, {40: 0, 41: 1, 43: 3, 44: 3}),             # + 0.97
    (0.2, {40: 0, 41: 1, 42: 2, 43: 3, 44: 3}),       # + 0.85
])
def test_duplicate_groups_per_eps(eps: float, expected: dict[int, int]) -> None:
    vecs, _ = planted_cluster(np.random.default_rng(1))
    order = np.arange(len(vecs))  # input order: bases first, so every copy names its base
    m, a = max_earlier_similarity(vecs[order], 8)
    root = duplicate_roots(m, a, eps)
    assert {int(j): int(r) for j, r in enumerate(root) if r >= 0} == expected
    assert duplicates_per_eps(m, [eps])[eps] == len(expected)


def test_dropped_chain_names_the_kept_root() -> None:
    # c is similar to b only, b similar to a: the original drops both b and c; both name a
    a = np.array([1.0, 0.0, 0.0])
    b = unit(np.array([1.0, 0.3, 0.0]))
    c = unit(np.array([1.0, 0.6, 0.05]))
    m, arg = max_earlier_similarity(np.array([a, b, c]), 2)
    assert a @ c < 1 - 0.06 < b @ c
    root = duplicate_roots(m, arg, 0.06)
    assert root.tolist() == [-1, 0, 0] and arg.tolist() == [-1, 0, 1]


def cluster_table(vecs: np.ndarray, centroid: np.ndarray, cluster: int = 7) -> pa.Table:
    n = len(vecs)
    t = side_table([f"k{i:03d}" for i in range(n)], np.arange(n), vecs.astype(np.float16))
    dist = (1.0 - unit(vecs.astype(np.float32)) @ centroid).astype(np.float32)
    return t.append_column("part", pa.array(["000000"] * n)).append_column(
        "cluster", pa.array([cluster] * n, pa.int32())).append_column("distance", pa.array(dist, pa.float32()))


def select_cfg(**kw: object) -> SelectConfig:
    data: dict = {"embed": {"model": "unused"}, "semdedup": {"eps": 0.05}, "top_n": {"n": None}}
    for dotted, v in kw.items():
        sec, key = dotted.split("__")
        data.setdefault(sec, {})[key] = v
    return SelectConfig.model_validate(data)


@pytest.mark.parametrize("keep", ["farthest", "nearest"])
def test_keep_rule(keep: str) -> None:
    rng = np.random.default_rng(2)
    d = 64
    centroid = unit(rng.normal(size=d))
    # pairs of near-identical vectors at different distances from the centroid
    rows = []
    for i in range(6):
        noise = unit(rng.normal(size=d))
        rows.append(unit(0.5 * centroid + noise))
        rows.append(unit(0.5 * centroid + noise + 0.01 * unit(rng.normal(size=d)) + 0.02 * centroid))
    vecs = np.array(rows)
    t = cluster_table(vecs, centroid)
    out = decide_cluster(select_cfg(semdedup__keep=keep), seed=0)(t).to_pylist()
    dist = t.column("distance").to_numpy()
    for pair in range(6):
        a, b = 2 * pair, 2 * pair + 1
        kept = a if (dist[a] > dist[b]) == (keep == "farthest") else b
        dropped = b if kept == a else a
        assert out[kept]["reason"] is None
        assert out[dropped]["reason"] == DUPLICATE and out[dropped]["dup_of"] == f"k{kept:03d}"
        assert f"duplicate of k{kept:03d}" in out[dropped]["detail"]


@pytest.mark.parametrize("rank", ["nearest", "farthest", "random"])
def test_top_n_membership(rank: str) -> None:
    rng = np.random.default_rng(3)
    centroid = unit(rng.normal(size=128))
    vecs = unit(centroid * rng.uniform(0.5, 3, size=(30, 1)) + rng.normal(size=(30, 128)))
    t = cluster_table(vecs, centroid)
    out = decide_cluster(select_cfg(semdedup__enabled=False, top_n__n=5, top_n__rank=rank), seed=0)(t).to_pylist()
    kept = {r["key"] for r in out if r["reason"] is None}
    dist = t.column("distance").to_numpy()
    keys = t.column("key").to_pylist()
    if rank == "nearest":
        want = {keys[i] for i in np.argsort(dist)[:5]}
    elif rank == "farthest":
        want = {keys[i] for i in np.argsort(-dist)[:5]}
    else:
        want = {keys[i] for i in order_by("random", dist, keys, 0)[:5]}
        assert want == {r["key"] for r in decide_cluster(select_cfg(semdedup__enabled=False, top_n__n=5,
                                                                    top_n__rank=rank), seed=0)(t.slice(0)).to_pylist()
                        if r["reason"] is None}  # reproducible
    assert kept == want
    assert sum(r["reason"] == NOT_SELECTED for r in out) == 25


def test_small_cluster_keeps_everything() -> None:
    rng = np.random.default_rng(4)
    centroid = unit(rng.normal(size=32))
    t = cluster_table(unit(rng.normal(size=(3, 32))), centroid)
    out = decide_cluster(select_cfg(top_n__n=20), seed=0)(t).to_pylist()
    assert all(r["reason"] is None for r in out)


def test_kmeans_recovers_gaussian_clusters() -> None:
    rng = np.random.default_rng(5)
    centers = unit(rng.normal(size=(8, 64)))
    labels = np.repeat(np.arange(8), 100)
    x = unit(centers[labels] + 0.15 * rng.normal(size=(800, 64))).astype(np.float16)
    cents, _ = kmeans.train(x[kmeans.sample_rows([800], 400, seed=0)[0]], 8, niter=20, seed=0, use_gpu=False, nredo=5)
    ids, dist = kmeans.assign(x, cents, threads=1)
    # each true cluster maps to exactly one k-means cluster
    mapping = {int(t): set(ids[labels == t].tolist()) for t in range(8)}
    assert all(len(v) == 1 for v in mapping.values()) and len({next(iter(v)) for v in mapping.values()}) == 8
    assert np.allclose(dist, 1 - np.sum(unit(x.astype(np.float32)) * cents[ids], axis=1), atol=2e-3)
    again, _ = kmeans.train(x[kmeans.sample_rows([800], 400, seed=0)[0]], 8, niter=20, seed=0, use_gpu=False, nredo=5)
    assert np.array_equal(cents, again)  # same seed, same centroids


def test_sample_rows_is_seeded_and_spans_files() -> None:
    a = kmeans.sample_rows([10, 0, 25, 5], 12, seed=3)
    b = kmeans.sample_rows([10, 0, 25, 5], 12, seed=3)
    assert [x.tolist() for x in a] == [x.tolist() for x in b] and sum(len(x) for x in a) == 12
    assert all(((x >= 0) & (x < n)).all() for x, n in zip(a, [10, 0, 25, 5]))
    assert [len(x) for x in kmeans.sample_rows([3, 4], 100, seed=0)] == [3, 4]
