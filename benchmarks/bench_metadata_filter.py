"""Metadata filter rows/s: our StepChain vs a bare pyarrow.compute filter, same parquet, same
predicates (short edge, aspect, punsafe, pwatermark, similarity, caption length), same process.
Also the URL-safety step on its own, which has no pyarrow.compute equivalent (it parses hosts).

    python benchmarks/bench_metadata_filter.py [--rows 5000000]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import Result, best_of, best_of_alternating, emit, laion_parquet, parse  # noqa: E402
from fusionweave.transforms.laion_columns import normalise  # noqa: E402
from fusionweave.transforms.metadata_filters import (CaptionLength, MaxAspectRatio, MinShortEdge, ScoreThreshold,  # noqa: E402
                                         UrlSafety)
from fusionweave.transforms.step import StepChain  # noqa: E402
from fusionweave.transforms.url_safety import AddressPolicy  # noqa: E402


def bare(t):
    """The same predicates as the chain's filters, written as a user would in one expression, with the
    same shortcuts: compares instead of min/max/divide, and characters counted only for captions with
    more bytes than the limit."""
    w, h, c = t.column("width"), t.column("height"), pc.fill_null(t.column("caption"), "")
    keep = pc.and_kleene(pc.greater_equal(w, 448), pc.greater_equal(h, 448))
    keep = pc.and_kleene(keep, pc.and_kleene(pc.less_equal(w, pc.multiply(h, 3.0)), pc.less_equal(h, pc.multiply(w, 3.0))))
    keep = pc.and_kleene(keep, pc.less_equal(t.column("punsafe"), 0.5))
    keep = pc.and_kleene(keep, pc.less_equal(t.column("pwatermark"), 0.8))
    keep = pc.and_kleene(keep, pc.greater_equal(t.column("similarity"), 0.1))
    size = pc.binary_length(c)
    keep = pc.and_kleene(keep, pc.and_(pc.greater(size, 0), pc.invert(pc.utf8_is_space(c))))
    long_ = pc.fill_null(pc.greater(size, 4096), False).combine_chunks()
    if long_.true_count:
        rows = pc.indices_nonzero(long_)
        n = pc.utf8_length(pc.utf8_trim_whitespace(pc.take(c, rows)))
        long_ = pc.replace_with_mask(long_, long_, pc.greater(n, 4096).combine_chunks())
    keep = pc.fill_null(pc.and_kleene(keep, pc.invert(long_)), True)
    return t.filter(keep), t.filter(pc.invert(keep))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=5_000_000)
    args = parse(ap, {"ci": {"rows": 20_000}})
    path = laion_parquet(Path("/tmp/fusionweave-bench") / f"laion-{args.rows}.parquet", args.rows)
    t = normalise(pq.read_table(path))
    chain = StepChain([MinShortEdge(448), MaxAspectRatio(3.0), ScoreThreshold("punsafe", max_value=0.5),
                       ScoreThreshold("pwatermark", max_value=0.8), ScoreThreshold("similarity", min_value=0.1),
                       CaptionLength(1, 4096)])
    kept_ours, _, _ = chain(t)
    kept_bare, _ = bare(t)
    assert kept_ours.num_rows == kept_bare.num_rows, (kept_ours.num_rows, kept_bare.num_rows)
    t_bare, t_ours = best_of_alternating([lambda: bare(t), lambda: chain(t)], repeat=21)  # noisy VM: more turns
    n = t.num_rows
    sub = t.slice(0, min(n, 1_000_000))
    t_url = best_of(lambda: StepChain([UrlSafety(AddressPolicy())])(sub), repeat=1)
    emit([Result("metadata filters", f"StepChain of 6 filters vs one bare pyarrow.compute filter, {n:,} rows",
                 n / t_ours, n / t_bare, "rows/s", ">= 0.9",
                 {"kept": kept_ours.num_rows, "url_safety_rows_per_s": round(sub.num_rows / t_url)})], args)


if __name__ == "__main__":
    main()
