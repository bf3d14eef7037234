"""Stable sample keys, derived from source identity and never from run order."""
from __future__ import annotations

import hashlib


def key_for(identity: str, length: int = 20) -> str:
    """A hex key from a source identity (a normalised URL, a dataset id...).

    Hex only: WebDataset splits member names at the first dot, so keys must not contain one.
    """
    return hashlib.sha256(identity.encode("utf-8", "surrogatepass")).hexdigest()[:length]
