"""A folder published whole (the dedup decisions a stage's parts read): it is filled under a
fresh name and then named by a small pointer object, written last. Object stores cannot rename
a folder; a pointer is one write, so readers see the whole folder or none of it."""
from __future__ import annotations

import contextlib
import json
import uuid
from typing import Iterator

from fusionweave.pipelines.storage import store
from fusionweave.pipelines.storage.location import Loc, location

POINTER = ".published.json"


def pointer(final: Loc) -> Loc:
    return final.parent / (final.name + POINTER)


@contextlib.contextmanager
def publish_folder(final: Loc) -> Iterator[Loc]:
    """Yield a fresh folder to fill; once the block ends without error, `final` names it."""
    final = location(final)
    fresh = final.parent / f"{final.name}.{uuid.uuid4().hex[:12]}"
    yield fresh
    store.put_bytes(pointer(final), json.dumps({"folder": fresh.name}).encode())


def published(final: Loc) -> Loc | None:
    """The folder `final` names, or None while it has not been published."""
    final = location(final)
    try:
        name = json.loads(store.read_bytes(pointer(final)))["folder"]
    except FileNotFoundError:
        return None
    return final.parent / name


def published_files(final: Loc, pattern: str = "*.parquet") -> list[Loc]:
    """The files of the folder `final` names, matching `pattern`; none while unpublished."""
    folder = published(final)
    return store.glob(folder, pattern) if folder is not None else []
