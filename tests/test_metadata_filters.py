import math

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from fusionweave.transforms.laion_columns import MissingColumnsError, normalise
from fusionweave.transforms.metadata_filters import CaptionLength, MaxAspectRatio, MinShortEdge, ScoreThreshold, UrlSafety
from fusionweave.transforms.step import StepChain
from fusionweave.transforms.url_safety import AddressPolicy


def canon(**cols):
    base = {"URL": ["http://example.com/a.jpg"], "TEXT": ["a cat"]}
    base.update(cols)
    return normalise(pa.table(base))


@pytest.mark.parametrize("url_col,text_col", [("URL", "TEXT"), ("url", "caption"), ("Url", "text")])
def test_column_variants(url_col, text_col):
    t = normalise(pa.table({url_col: ["http://x.org/1.jpg"], text_col: ["hi"], "WIDTH": [500], "HEIGHT": [600],
                            "pUnsafe": [0.2]}))
    assert t.column("url").to_pylist() == ["http://x.org/1.jpg"]
    assert t.column("caption").to_pylist() == ["hi"]
    assert t.column("width").to_pylist() == [500.0]
    assert t.column("punsafe").to_pylist() == [0.2]
    assert t.column("similarity").to_pylist() == [None]


def test_missing_required_columns_is_a_clear_error():
    with pytest.raises(MissingColumnsError, match="url"):
        normalise(pa.table({"TEXT": ["x"]}))


def test_non_utf8_binary_captions_survive():
    t = normalise(pa.table({"URL": ["http://x.org/1.jpg"], "TEXT": pa.array([b"caf\xe9 \xff"], pa.binary())}))
    assert t.column("caption").to_pylist()[0].startswith("caf")


def test_string_sizes_and_garbage_become_null():
    t = normalise(pa.table({"URL": ["u", "v"], "TEXT": ["a", "b"], "WIDTH": ["512", "abc"], "HEIGHT": ["500", None]}))
    assert t.column("width").to_pylist() == [512.0, None]


def test_size_filters_with_null_and_nan():
    t = canon(URL=["a", "b", "c", "d"], TEXT=["x"] * 4, WIDTH=[500.0, 300.0, float("nan"), None],
              HEIGHT=[600.0, 900.0, 500.0, 500.0])
    reasons = MinShortEdge(448).reasons(t).to_pylist()
    assert reasons == [None, "short_edge_too_small", None, None]
    strict = MinShortEdge(448, reject_missing=True).reasons(t).to_pylist()
    assert strict == [None, "short_edge_too_small", "missing_size", "missing_size"]
    assert MaxAspectRatio(2.0).reasons(t).to_pylist() == [None, "aspect_ratio_too_large", None, None]


def test_nan_is_a_missing_value_not_a_size():
    # a NaN edge must not be skipped: min(NaN, 300) is not 300, so the row is "missing", not "too small"
    t = canon(URL=["a", "b"], TEXT=["x"] * 2, WIDTH=[float("nan"), 1000.0], HEIGHT=[300.0, float("nan")],
              punsafe=[float("nan"), 0.9])
    assert t.column("width").to_pylist() == [None, 1000.0] and t.column("punsafe").to_pylist() == [None, 0.9]
    assert MinShortEdge(448).reasons(t).to_pylist() == [None, None]
    assert MinShortEdge(448, reject_missing=True).reasons(t).to_pylist() == ["missing_size", "missing_size"]
    assert MaxAspectRatio(2.0).reasons(t).to_pylist() == [None, None]
    assert ScoreThreshold("punsafe", max_value=0.5, reject_missing=True).reasons(t).to_pylist() == \
        ["punsafe_missing", "punsafe_above_max"]


def test_score_thresholds():
    t = canon(URL=["a", "b", "c"], TEXT=["x"] * 3, punsafe=[0.1, 0.9, None], similarity=[0.3, 0.2, None])
    assert ScoreThreshold("punsafe", max_value=0.5).reasons(t).to_pylist() == [None, "punsafe_above_max", None]
    assert ScoreThreshold("similarity", min_value=0.28).reasons(t).to_pylist() == [None, "similarity_below_min", None]
    with pytest.raises(ValueError):
        ScoreThreshold("punsafe")


def test_caption_length():
    t = canon(URL=["a"] * 5, TEXT=["ok caption", "", "   ", None, "x" * 5000])
    assert CaptionLength(1, 4096).reasons(t).to_pylist() == [None, "empty_caption", "empty_caption", "empty_caption",
                                                            "caption_too_long"]


def test_url_safety_in_a_chain():
    t = canon(URL=["https://example.com/a.jpg", "file:///etc/passwd", "http://10.1.2.3/x.jpg", "http://u:p@example.com/",
                   "ftp://example.com/x", None, "http://169.254.169.254/latest/meta-data"],
              TEXT=["x"] * 7)
    kept, rejected, stats = StepChain([UrlSafety(AddressPolicy())])(t)
    assert kept.column("url").to_pylist() == ["https://example.com/a.jpg"]
    assert stats["url_safety"].rejects == {"unsupported_scheme": 2, "private_address": 1, "userinfo_in_url": 1,
                                           "missing_url": 1, "metadata_address": 1}
    assert not math.isnan(stats["url_safety"].seconds)


def test_size_masks_match_min_max_divide():
    # the filters use compares (w < m or h < m; w > r*h or h > r*w) for speed: the same rows as
    # min(w, h) < m and max/min > r over zeros, negatives, NaN, nulls and the exact boundaries
    edges = [None, float("nan"), -5.0, 0.0, 1.0, 149.0, 150.0, 151.0, 447.0, 448.0, 449.0, 1344.0, 1345.0, 5000.0]
    pairs = [(w, h) for w in edges for h in edges]
    t = pa.table({"width": [p[0] for p in pairs], "height": [p[1] for p in pairs]})
    w, h = t.column("width"), t.column("height")
    lo, hi = pc.min_element_wise(w, h, skip_nulls=False), pc.max_element_wise(w, h, skip_nulls=False)
    want_small = pc.fill_null(pc.less(lo, 448), False).to_pylist()
    got = MinShortEdge(448).reasons(t).to_pylist()
    assert [r == "short_edge_too_small" for r in got] == want_small
    for r in (1.5, 3.0):
        want_wide = pc.fill_null(pc.greater(pc.divide(hi, lo), r), False).to_pylist()
        got = MaxAspectRatio(r).reasons(t).to_pylist()
        assert [x == "aspect_ratio_too_large" for x in got] == want_wide, r
    assert sum(want_wide) > 10 and sum(want_small) > 10  # the cases are not all on one side


def test_caption_masks_match_stripped_character_counts():
    # empty = only whitespace (Unicode's, as utf8_trim_whitespace strips); too long counts stripped
    # characters, not bytes: a 2-byte character counts once, surrounding spaces not at all
    caps = ["", " ", "\u3000\t\n", "\u00a0" * 5000, None, "a", " a ", "\u200b", "é" * 4096, "é" * 4097,
            " " + "x" * 4096 + " ", "x" * 4097, "\u2003" + "y" * 4097]
    t = pa.table({"caption": caps})
    n = pc.utf8_length(pc.utf8_trim_whitespace(pc.fill_null(t.column("caption"), ""))).to_pylist()
    want = ["empty_caption" if k == 0 else "caption_too_long" if k > 4096 else None for k in n]
    assert CaptionLength(1, 4096).reasons(t).to_pylist() == want
    assert want.count("caption_too_long") == 3 and want.count("empty_caption") == 5
    assert CaptionLength(3, 10).reasons(t).to_pylist()[4:9] == ["empty_caption"] + ["caption_too_short"] * 3 + \
        ["caption_too_long"]
