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
        small = pc.less(pc.min_element_wise(w, h, skip_nulls=False), self.min_px)  # a missing size: kept here
        if not self.reject_missing:
            return [("short_edge_too_small", small)]
        return [("short_edge_too_small", small), ("missing_size", pc.or_(_missing(w), _missing(h)))]


class MaxAspectRatio(Filter):
    name = "max_aspect_ratio"

    def __init__(self, max_ratio: float):
        self.max_ratio = max_ratio

    def masks(self, batch: pa.Table) -> list[tuple[str, Mask]]:
        w, h = _floats(batch, "width"), _floats(batch, "height")
        ratio = pc.divide(pc.max_element_wise(w, h, skip_nulls=False), pc.min_element_wise(w, h, skip_nulls=False))
        return [("aspect_ratio_too_large", pc.greater(ratio, self.max_ratio))]  # NaN compares False


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
        stripped = pc.utf8_trim_whitespace(pc.fill_null(batch.column("caption"), ""))
        n = pc.utf8_length(stripped)
        short = [("caption_too_short", pc.less(n, self.min_chars))] if self.min_chars > 1 else []  # else n == 0 is all
        return [("empty_caption", pc.equal(n, 0)), *short, ("caption_too_long", pc.greater(n, self.max_chars))]
