"""Normalise the column-name variants of LAION / Re-LAION parquet metadata into one schema.

LAION-400M, LAION-2B(-en), LAION-5B, Re-LAION and their derivatives spell the same fields
differently (`URL`/`url`, `TEXT`/`caption`/`text`, `WIDTH`/`width`, `punsafe`/`pUnsafe`, ...).
"""
from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

# canonical name -> accepted spellings, matched case-insensitively
COLUMN_VARIANTS: dict[str, tuple[str, ...]] = {
    "url": ("url", "image_url", "img_url"),
    "caption": ("caption", "text", "alt", "alt_text"),
    "width": ("width", "original_width"),
    "height": ("height", "original_height"),
    "similarity": ("similarity", "clip_similarity", "clip_score"),
    "punsafe": ("punsafe", "nsfw_prob", "p_unsafe"),
    "pwatermark": ("pwatermark", "p_watermark", "watermark_prob"),
    "license": ("license", "LICENSE"),
    "sample_id": ("sample_id", "samplesid", "SAMPLE_ID"),
}
TYPES: dict[str, pa.DataType] = {
    "url": pa.string(),
    "caption": pa.string(),
    "width": pa.float64(),
    "height": pa.float64(),
    "similarity": pa.float64(),
    "punsafe": pa.float64(),
    "pwatermark": pa.float64(),
    "license": pa.string(),
    "sample_id": pa.string(),
}
REQUIRED = ("url", "caption")


class MissingColumnsError(ValueError):
    pass


def resolve_columns(names: list[str]) -> dict[str, str]:
    """canonical -> actual column name present in `names`."""
    lower = {n.lower(): n for n in names}
    found: dict[str, str] = {}
    for canon, variants in COLUMN_VARIANTS.items():
        for v in variants:
            if v.lower() in lower:
                found[canon] = lower[v.lower()]
                break
    missing = [c for c in REQUIRED if c not in found]
    if missing:
        raise MissingColumnsError(
            f"LAION metadata needs columns {list(REQUIRED)} (any of their spellings "
            f"{ {c: COLUMN_VARIANTS[c] for c in missing} }); found {names}"
        )
    return found


def _to_string(arr: pa.ChunkedArray) -> pa.ChunkedArray:
    if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
        return arr.cast(pa.string())
    if pa.types.is_binary(arr.type) or pa.types.is_large_binary(arr.type):
        # captions are sometimes stored as bytes and not always valid UTF-8: decode with
        # replacement so the row survives and the caption filter can judge it
        return pa.chunked_array(
            [pa.array([None if b is None else b.decode("utf-8", "replace") for b in arr.to_pylist()], pa.string())]
        )
    return arr.cast(pa.string(), safe=False)


def normalise(table: pa.Table) -> pa.Table:
    """Return a table with the canonical columns (missing optional ones as nulls), in a fixed order."""
    mapping = resolve_columns(table.column_names)
    cols: dict[str, pa.ChunkedArray] = {}
    for canon, typ in TYPES.items():
        if canon in mapping:
            arr = table.column(mapping[canon])
            if pa.types.is_string(typ):
                arr = _to_string(arr)
            else:
                arr = pc.cast(arr, typ, safe=False) if not pa.types.is_string(arr.type) else _numeric_from_strings(arr)
                arr = _nan_as_null(arr)
            cols[canon] = arr
        else:
            cols[canon] = pa.chunked_array([pa.nulls(table.num_rows, typ)])
    return pa.table(cols)


def _nan_as_null(arr: pa.ChunkedArray) -> pa.ChunkedArray:
    """NaN is how float columns spell "missing": one spelling (null) for the filters' kernels."""
    nan = pc.is_nan(arr)
    return pc.if_else(nan, pa.scalar(None, arr.type), arr) if pc.any(nan).as_py() else arr


def _numeric_from_strings(arr: pa.ChunkedArray) -> pa.ChunkedArray:
    out = []
    for v in arr.to_pylist():
        try:
            out.append(float(v) if v is not None else None)
        except ValueError:
            out.append(None)
    return pa.chunked_array([pa.array(out, pa.float64())])
