"""Stable sample keys, derived from source identity and never from run order."""
from __future__ import annotations

import hashlib

import pyarrow as pa


def key_for(identity: str, length: int = 20) -> str:
    """A hex key from a source identity (a normalised URL, a dataset id...).

    Hex only: WebDataset splits member names at the first dot, so keys must not contain one.
    """
    return _key(identity.encode("utf-8", "surrogatepass"), length)


def keys_for(identities: pa.Array | pa.ChunkedArray, length: int = 20) -> pa.Array:
    """`key_for` of every identity in a string array without nulls (Arrow strings are UTF-8
    already: their bytes are what `key_for` hashes)."""
    return pa.array([_key(b, length) for b in identities.cast(pa.binary()).to_pylist()], pa.string())


def _key(data: bytes, length: int) -> str:
    return hashlib.sha256(data).hexdigest()[:length]
