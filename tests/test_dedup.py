import numpy as np
import pyarrow as pa

from fusionweave.pipelines.global_dedup import band_rows
from fusionweave.transforms.dedup import band_values, earliest_per_ord, exact_duplicates, near_duplicates


def table(ords, values, col="v"):
    return pa.table({"ord": pa.array(ords, pa.int64()), "key": [f"k{o}" for o in ords], col: values})


def test_exact_keeps_first_in_input_order():
    d = exact_duplicates(table([5, 2, 9, 3], ["a", "a", "b", "a"]), "v", "dup").to_pylist()
    assert {r["ord"]: r["dup_of"] for r in d} == {3: "k2", 5: "k2"}


def test_exact_ignores_nulls():
    assert exact_duplicates(table([1, 2], [None, None]), "v", "dup").num_rows == 0


def brute_force(h, ords, t):
    out = {}
    order = np.argsort(ords)
    for i_pos, i in enumerate(order):
        for j in order[:i_pos]:
            if bin(int(h[i]) ^ int(h[j])).count("1") <= t:
                out[int(ords[i])] = int(ords[j])
                break
    return out


def test_near_dups_via_bands_equal_brute_force():
    rng = np.random.default_rng(0)
    base = rng.integers(0, 2**63, 60, dtype=np.uint64)
    # plant neighbours at known distances
    flips = [0, 1, 2, 3, 4, 5, 7, 9]
    extra = []
    for i, f in enumerate(flips * 3):
        b = base[i % len(base)]
        bits = rng.choice(64, f, replace=False)
        for bit in bits:
            b ^= np.uint64(1) << np.uint64(int(bit))
        extra.append(b)
    h = np.concatenate([base, np.array(extra, np.uint64)])
    ords = rng.permutation(len(h)).astype(np.int64)
    for t in (0, 2, 4, 6):
        bands = band_rows(ords, [f"k{o}" for o in ords], ["p"] * len(h), h, t)
        found = []
        for band in np.unique(bands.column("band").to_numpy()):
            g = bands.filter(pa.compute.equal(bands.column("band"), pa.scalar(band, pa.uint64())))
            found.append(near_duplicates(g, "phash", t, "near"))
        got = earliest_per_ord(pa.concat_tables(found))
        got_map = dict(zip(got.column("ord").to_pylist(), got.column("dup_of_ord").to_pylist()))
        assert got_map == brute_force(h, ords, t), f"threshold {t}"


def test_band_values_cover_all_bits():
    h = np.array([2**64 - 1], np.uint64)
    bands = band_values(h, 3)
    assert sum(bin(int(b[0])).count("1") for b in bands) == 64


def test_near_duplicates_blocked_equals_unblocked():
    rng = np.random.default_rng(1)
    h = rng.integers(0, 2**16, 300, dtype=np.uint64)  # many collisions in few bits
    t = table(list(range(300)), pa.array(h, pa.uint64()), col="phash")
    a = near_duplicates(t, "phash", 2, "n", block=7)
    b = near_duplicates(t, "phash", 2, "n", block=4096)
    assert a.equals(b) and a.num_rows > 0


def test_shuffle_partitions_follow_rows_and_bytes_whichever_needs_more():
    from fusionweave.orchestration.ray_engine import RayEngine

    engine = RayEngine()  # not started: the count is arithmetic
    assert engine.shuffle_partitions(0, 0) == 1
    assert engine.shuffle_partitions(2_000_000, 1 << 20) == 2  # narrow rows: by rows
    assert engine.shuffle_partitions(1_000_000, 2 << 30) == 8  # wide rows (embeddings): by bytes
    assert engine.shuffle_partitions(10**9, 1 << 40) == 200  # never more than Ray's default
