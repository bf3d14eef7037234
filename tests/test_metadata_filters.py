import math

import pyarrow as pa
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
