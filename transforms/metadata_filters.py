"""Filters over LAION-style metadata rows (canonical columns from laion_columns.normalise)."""
from __future__ import annotations

from typing import Any, ClassVar

import pyarrow as pa
import pyarrow.compute as pc

from fusionweave.transforms.step import Filter, Mask
from fusionweave.transforms.url_safety import AddressPolicy, url_refusals


METADATA_FILTERS: dict[str, type["MetadataFilter"]] = {}  # config field -> the filter it turns on


class MetadataFilter(Filter):
    """A filter of the curate metadata chain that brings its own config field: subclassing
    registers it, so `curate.metadata.<field>: VALUE` in a recipe (validated as `value`, a type
    pydantic understands) appends `cls(VALUE)` to the chain. Unset or null: not in the chain."""

    field: ClassVar[str] = ""
    value: ClassVar[Any] = Any

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.field:
            METADATA_FILTERS[cls.field] = cls


def _floats(batch: pa.Table, col: str) -> pa.ChunkedArray:
    """Column as float64, nulls kept: the masks are Arrow kernels (whose memory pool reuses its
    buffers; numpy temporaries of a 5M-row batch are fresh pages on every call) and a null
    compares as "does not hold"."""
    return batch.column(col).cast(pa.float64())


def _missing(v: pa.ChunkedArray) -> pa.ChunkedArray:
    return pc.is_null(v, nan_is_null=True)


class UrlSafety(Filter):
    name = "url_safety"

    def __init__(self, policy: AddressPolicy):
        self.policy = policy

    def reasons(self, batch: pa.Table) -> pa.Array:
        return url_refusals(batch.column("url"), self.policy)


class MinShortEdge(Filter):
    """Short edge from the metadata's WIDTH/HEIGHT. Rows without sizes are kept by default:
    the validate stage measures every decoded image anyway."""

    name = "min_short_edge"

    def __init__(self, min_px: int, reject_missing: bool = False):
        self.min_px = min_px
        self.reject_missing = reject_missing

    def masks(self, batch: pa.Table) -> list[tuple[str, Mask]]:
        w, h = _floats(batch, "width"), _floats(batch, "height")
        # min(w, h) < m as two compares: min_element_wise costs 4x a compare. `or_` is null when either
        # edge is (a missing size: kept here); a NaN edge compares False, as min() skips it.
        small = pc.or_(pc.less(w, self.min_px), pc.less(h, self.min_px))
        if not self.reject_missing:
            return [("short_edge_too_small", small)]
        return [("short_edge_too_small", small), ("missing_size", pc.or_(_missing(w), _missing(h)))]


class MaxAspectRatio(Filter):
    name = "max_aspect_ratio"

    def __init__(self, max_ratio: float):
        self.max_ratio = max_ratio

    def masks(self, batch: pa.Table) -> list[tuple[str, Mask]]:
        w, h = _floats(batch, "width"), _floats(batch, "height")
        # max/min > r without min/max/divide (4x dearer): w > r*h or h > r*w. The same rows for r >= 1:
        # a zero edge against a positive one is too wide (x/0 = inf), two zero edges are not (NaN), and
        # a negative edge never is (its quotient is <= 1). Null when either edge is; NaN compares False.
        r = self.max_ratio
        wide = pc.or_(pc.greater(w, pc.multiply(h, r)), pc.greater(h, pc.multiply(w, r)))
        signed = pc.and_(pc.greater_equal(w, 0), pc.greater_equal(h, 0))
        return [("aspect_ratio_too_large", pc.and_(wide, signed))]


class ScoreThreshold(Filter):
    """Keep rows whose score is <= max (punsafe, pwatermark) or >= min (similarity).
    A missing score passes unless `reject_missing`."""

    def __init__(self, column: str, *, max_value: float | None = None, min_value: float | None = None,
                 reject_missing: bool = False):
        if (max_value is None) == (min_value is None):
            raise ValueError("give exactly one of max_value / min_value")
        self.column, self.max_value, self.min_value = column, max_value, min_value
        self.reject_missing = reject_missing
        self.name = f"{column}_threshold"

    def masks(self, batch: pa.Table) -> list[tuple[str, Mask]]:
        v = _floats(batch, self.column)  # a missing score (null or NaN) compares False
        if self.max_value is not None:
            out = [(f"{self.column}_above_max", pc.greater(v, self.max_value))]
        else:
            out = [(f"{self.column}_below_min", pc.less(v, self.min_value))]
        return out + [(f"{self.column}_missing", _missing(v))] if self.reject_missing else out


class CaptionLength(Filter):
    name = "caption_length"

    def __init__(self, min_chars: int = 1, max_chars: int = 4096):
        self.min_chars, self.max_chars = min_chars, max_chars

    def masks(self, batch: pa.Table) -> list[tuple[str, Mask]]:
        caption = batch.column("caption")
        if self.min_chars > 1:  # a short caption needs every row's stripped length
            n = pc.utf8_length(pc.utf8_trim_whitespace(pc.fill_null(caption, "")))
            return [("empty_caption", pc.equal(n, 0)), ("caption_too_short", pc.less(n, self.min_chars)),
                    ("caption_too_long", pc.greater(n, self.max_chars))]
        # Stripping and counting characters of every caption is 5x dearer than these: empty after
        # stripping = no bytes, or only whitespace (the same set utf8_trim_whitespace strips); and a
        # caption can be too long only if it has more bytes than max_chars (a character is >= 1 byte).
        size = pc.binary_length(caption)
        empty = pc.fill_null(pc.or_kleene(pc.equal(size, 0), pc.utf8_is_space(caption)), True)  # null: empty
        return [("empty_caption", empty), ("caption_too_long", self._too_long(caption, pc.greater(size, self.max_chars)))]

    def _too_long(self, caption: pa.ChunkedArray, may_be: pa.ChunkedArray) -> pa.Array:
        may_be = pc.fill_null(may_be, False).combine_chunks()
        if not may_be.true_count:
            return may_be
        rows = pc.indices_nonzero(may_be)
        stripped = pc.utf8_length(pc.utf8_trim_whitespace(pc.take(caption, rows)))
        return pc.replace_with_mask(may_be, may_be, pc.greater(stripped, self.max_chars).combine_chunks())
