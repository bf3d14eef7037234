"""The vectorised metadata identity (URL normalisation, keys, sources, buckets) and URL-safety
filter give exactly what the per-row reference gives, on LAION-like rows with the awkward mix the
web has: duplicates, upper-case, non-ASCII and percent-encoded hosts, private addresses, ports,
userinfo, bad URLs."""
from __future__ import annotations

import zlib

import numpy as np
import pyarrow as pa
import pytest

from fusionweave.pipelines.curate.metadata import _with_identity
from fusionweave.pipelines.global_dedup import apply_dups, bucket_of
from fusionweave.transforms.keys import key_for
from fusionweave.transforms.metadata_filters import UrlSafety
from fusionweave.transforms.step import REJECT_DETAIL, REJECT_REASON, REJECT_STEP, StepChain, reject
from fusionweave.transforms.url_safety import AddressPolicy, normalise_url, url_refusal

# (weight, template): {i} is a row number, so hosts and paths repeat at realistic rates
HOSTS = [(300, "img{h}.example.com"), (20, "IMG{h}.Example.COM"), (3, "cdn{h}.shop.co.uk."), (3, "bücher{h}.de"),
         (2, "例え{h}.jp"), (1, "ｅｘａｍｐｌｅ{h}.com"), (1, "ex%41mple{h}.com"), (1, "%E4%BE%8B{h}.jp"),
         (1, "127.0.0.{h}"), (1, "10.{h}.0.1"), (1, "169.254.169.254"), (1, "localhost"), (1, "0x7f000001"),
         (1, "[::1]"), (1, "[2001:db8::{h}]"), (1, "xn--bcher-kva.de"), (1, "a_b{h}.example.com"), (1, "-bad-.com"),
         (1, ".."), (1, "ex ample.com"), (1, "exa%20mple.com"), (1, "ex%zzample.com"), (1, "metadata"),
         (1, "ⓔⓧⓐⓜⓟⓛⓔ{h}.com"), (1, "ſ{h}.com"), (1, "\u212a{h}.com"), (1, "１２７。０。０。１"), (1, "")]
PORTS = [(300, ""), (2, ":80"), (2, ":443"), (2, ":8080"), (1, ":99999"), (1, ":abc"), (1, ":"), (1, ":0080")]
SCHEMES = [(200, "https"), (40, "http"), (3, "HTTPS"), (3, "Http"), (2, "ftp"), (2, "")]
USERINFO = [(300, ""), (2, "user@"), (2, "u:p@")]
PATHS = [(300, "/p/{i}.jpg"), (5, ""), (4, "?q={i}"), (3, "/a b/{i}.jpg"), (3, "/ü/{i}.png"), (3, "/x{i}.jpg#frag"),
         (2, "/x\t{i}.jpg"), (2, "/%20/{i}"), (2, "/a'b\"<{i}>"), (2, "/{{{i}}}.jpg"), (2, "#only{i}"),
         (2, "/x{i}.jpg "), (1, "/x{i}.jpg#frag\u3000")]
ODD = [None, "", "   ", "not a url", "http://", "http:///nohost", "javascript:alert(1)", " https://Example.com/a.jpg ",
       "https://example.com/a.jpg\n", "\thttp://x.com/", "https://example.com/a.jpg\u3000", "HTTP://EXAMPLE.COM"]


def _pick(rng: np.random.Generator, options: list[tuple[int, str]], n: int) -> list[str]:
    weights = np.array([w for w, _ in options], float)
    return [options[k][1] for k in rng.choice(len(options), n, p=weights / weights.sum())]


def laion_like_urls(n: int, seed: int = 0) -> list[str | None]:
    rng = np.random.default_rng(seed)
    hosts, paths = _pick(rng, HOSTS, n), _pick(rng, PATHS, n)
    schemes, ports, users = _pick(rng, SCHEMES, n), _pick(rng, PORTS, n), _pick(rng, USERINFO, n)
    host_ids = rng.integers(0, 2000, n)
    urls: list[str | None] = [f"{s}://{u}{h.format(h=hid)}{p}{path.format(i=i)}"
                              for i, (s, u, h, hid, p, path) in enumerate(zip(schemes, users, hosts, host_ids, ports, paths))]
    odd = rng.random(n) < 0.01
    for i in np.flatnonzero(odd):
        urls[i] = ODD[rng.integers(0, len(ODD))]
    dup = np.flatnonzero(rng.random(n) < 0.05)
    for i, j in zip(dup, rng.integers(0, n, len(dup))):
        urls[i] = urls[j]
    return urls


def _reference_identity(urls: list[str | None], name: str, start: int) -> tuple[list, list, list]:
    """The per-row implementation the vectorised one replaced, kept as the reference."""
    sources = [f"{name}#{start + i}" for i in range(len(urls))]
    norms: list[str | None] = []
    for url in urls:
        try:
            norms.append(normalise_url(url) if url else None)
        except ValueError:
            norms.append(None)
    keys = [key_for(n if n is not None else f"src:{s}") for n, s in zip(norms, sources)]
    return keys, sources, norms


POLICIES = [AddressPolicy(), AddressPolicy(allow_private=True), AddressPolicy(allowed=("127.0.0.1", "10.0.0.0/8"))]


@pytest.mark.parametrize("n", [20_000, pytest.param(1_000_000, marks=pytest.mark.heavy)])
def test_vectorised_identity_equals_per_row_reference(n):
    urls = laion_like_urls(n, seed=n)
    part = {"file": "/data/laion/part-00007.parquet", "start": 1_234, "ord": 99_000}
    t = _with_identity(pa.table({"url": pa.array(urls, pa.string())}), part)
    keys, sources, norms = _reference_identity(urls, "part-00007.parquet", 1_234)
    assert t.column("url_norm").to_pylist() == norms
    assert t.column("key").to_pylist() == keys
    assert t.column("source").to_pylist() == sources
    assert t.column("ord").to_pylist() == list(range(99_000, 99_000 + n))
    buckets = [zlib.crc32(v.encode()) % 64 if v is not None else 0 for v in norms]
    assert bucket_of(t.column("url_norm"), 64).to_pylist() == buckets
    batch = pa.table({"url": pa.array(urls, pa.string())})
    for policy in POLICIES[:1] if n > 100_000 else POLICIES:  # the policy decides per host: 20k rows show it
        got = UrlSafety(policy).reasons(batch)
        assert got.to_pylist() == [url_refusal(u, policy) for u in urls], policy
    # the mix really exercises both paths
    assert sum(v is None for v in norms) > n // 200 and len(set(norms)) < n


def test_empty_and_all_null_batches():
    part = {"file": "x.parquet", "start": 0, "ord": 0}
    empty = _with_identity(pa.table({"url": pa.array([], pa.string())}), part)
    assert empty.num_rows == 0 and empty.column("key").type == pa.string()
    nulls = _with_identity(pa.table({"url": pa.array([None, None], pa.string())}), part)
    assert nulls.column("key").to_pylist() == [key_for("src:x.parquet#0"), key_for("src:x.parquet#1")]
    kept, rejected, _ = StepChain([UrlSafety(AddressPolicy())])(pa.table({"url": pa.array([None], pa.string())}))
    assert kept.num_rows == 0 and rejected.column(REJECT_REASON).to_pylist() == ["missing_url"]


def test_apply_dups_marks_only_live_rows():
    t = reject(pa.table({"ord": pa.array([5, 6, 7, 8], pa.int64())}), "earlier", [None, "bad", None, None])
    dups = pa.table({"ord": pa.array([6, 7], pa.int64()), "reason": ["duplicate_url", "duplicate_url"],
                     "dup_of": ["k1", "k2"], "dup_of_ord": pa.array([1, 2], pa.int64())})
    out = apply_dups(t, "url_dedup", dups)
    assert out.column(REJECT_STEP).to_pylist() == [None, "earlier", "url_dedup", None]
    assert out.column(REJECT_REASON).to_pylist() == [None, "bad", "duplicate_url", None]
    assert out.column(REJECT_DETAIL).to_pylist() == [None, None, "duplicate of k2", None]
