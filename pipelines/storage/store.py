"""The storage layer: every read, listing and write of a build folder or an input goes through
here, for a local path and an object-store URI alike (`location.Loc`), over `pyarrow.fs`. How a
write commits is the only thing that differs by store (`backends`); a store's failure is a
`StorageError` (`failures`)."""
from __future__ import annotations

import contextlib
import fnmatch
import os
import tempfile
import uuid
from pathlib import Path
from concurrent.futures import ThreadPoolExecutor
from typing import IO, Any, Callable, Iterable, Iterator, TypeVar

import pyarrow.fs as pafs

from fusionweave.pipelines.storage.backends import backend, is_tmp, tmp_name
from fusionweave.pipelines.storage.failures import Guarded, StorageError, failure_reason, translated
from fusionweave.pipelines.storage.location import Loc, ObjectPath, location

__all__ = ["StorageError", "failure_reason", "is_tmp", "tmp_name"]  # with the functions below
READERS = 16  # reads in flight at once (`read_each`)
T, R = TypeVar("T"), TypeVar("R")


def fs_path(value: str | os.PathLike | ObjectPath) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem and its name for a location (for pyarrow and Ray Data readers)."""
    loc = location(value)
    b = backend(loc)
    return b.fs, b.name(loc)


# --- reading ---------------------------------------------------------------------------------

def info(loc: Loc) -> pafs.FileInfo:
    loc = location(loc)
    fs, name = fs_path(loc)
    with translated(loc):
        return fs.get_file_info(name)


def exists(loc: Loc) -> bool:
    return info(loc).type != pafs.FileType.NotFound


def is_dir(loc: Loc) -> bool:
    return info(loc).type == pafs.FileType.Directory


def is_file(loc: Loc) -> bool:
    return info(loc).type == pafs.FileType.File


def size(loc: Loc) -> int | None:
    i = info(loc)
    return i.size if i.type == pafs.FileType.File else None


def listdir(loc: Loc, recursive: bool = False) -> dict[str, pafs.FileInfo]:
    """What is under a folder (a prefix), by path relative to it; {} when there is nothing."""
    loc = location(loc)
    fs, name = fs_path(loc)
    with translated(loc):
        try:
            found = fs.get_file_info(pafs.FileSelector(name, allow_not_found=True, recursive=recursive))
        except NotADirectoryError:
            return {}
    base = name.rstrip("/") + "/"
    return {i.path[len(base):] if i.path.startswith(base) else i.base_name: i for i in found}


def files(loc: Loc, recursive: bool = False) -> dict[str, int]:
    """Files under a folder (relative path -> size), temporaries of interrupted writes included."""
    return {rel: i.size for rel, i in listdir(loc, recursive).items() if i.type == pafs.FileType.File}


def glob(loc: Loc, pattern: str) -> list[Loc]:
    """Paths under `loc` matching `pattern`, one fnmatch pattern per `/`-separated level, sorted."""
    level: list[Loc] = [location(loc)]
    segments = pattern.split("/")
    for i, seg in enumerate(segments):
        last = i == len(segments) - 1
        nxt: list[Loc] = []
        for base in level:
            for name, it in sorted(listdir(base).items()):
                if fnmatch.fnmatchcase(name, seg) and (last or it.type == pafs.FileType.Directory):
                    nxt.append(base / name)
        level = nxt
    return sorted(level, key=str)


def open_input(loc: Loc) -> IO[bytes]:
    """A sequential reader (tar streams); FileNotFoundError when `loc` does not exist."""
    loc = location(loc)
    with translated(loc):
        f = backend(loc).open_input(loc)
    return f if isinstance(loc, Path) else Guarded(f, loc)  # type: ignore[return-value]


def open_random(loc: Loc) -> Any:
    """A random-access reader (parquet footers, row groups)."""
    loc = location(loc)
    fs, name = fs_path(loc)
    with translated(loc):
        return fs.open_input_file(name)


def read_bytes(loc: Loc) -> bytes:
    loc = location(loc)
    with translated(loc):
        return backend(loc).read_bytes(loc)


def read_text(loc: Loc) -> str:
    return read_bytes(loc).decode("utf-8")


def read_each(read: Callable[[T], R], items: Iterable[T]) -> list[R]:
    """`read` applied to many items at once, results in order: an object store answers each
    request in milliseconds, and answers many in parallel."""
    items = list(items)
    if len(items) < 2:
        return [read(i) for i in items]
    with ThreadPoolExecutor(min(READERS, len(items))) as pool:
        return list(pool.map(read, items))


def read_parquet(loc: Loc, **kwargs: Any) -> Any:
    """A whole parquet file (a part's side table or shard), read in one request. With no more
    than `columns`, through `ParquetFile`: the same table without importing pyarrow.dataset and
    pandas with it (~0.35 s in every fresh worker)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    source = pa.BufferReader(read_bytes(loc))
    if set(kwargs) <= {"columns"}:
        return pq.ParquetFile(source).read(**kwargs)
    return pq.read_table(source, **kwargs)


def parquet_file(loc: Loc) -> Any:
    import pyarrow.parquet as pq

    loc = location(loc)
    with translated(loc):
        return pq.ParquetFile(open_random(loc))


# --- writing ---------------------------------------------------------------------------------

@contextlib.contextmanager
def atomic_path(path: str | os.PathLike | ObjectPath) -> Iterator[Path]:
    """Yield a local temporary file to fill; on success it becomes `path` whole (see `commit`)."""
    loc = location(path)
    b = backend(loc)
    tmp = b.staging(loc)
    try:
        yield tmp
        if tmp.exists():
            with translated(loc):
                b.commit(tmp, loc)
    finally:
        tmp.unlink(missing_ok=True)


def put_bytes(path: str | os.PathLike | ObjectPath, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def create(path: str | os.PathLike | ObjectPath, data: bytes) -> bool:
    """Create `path` with `data` unless it exists; True when this call created it."""
    loc = location(path)
    with translated(loc):
        return backend(loc).create(loc, data)


def delete(loc: Loc) -> None:
    loc = location(loc)
    fs, name = fs_path(loc)
    with translated(loc), contextlib.suppress(FileNotFoundError):
        fs.delete_file(name)


def delete_tree(loc: Loc) -> None:
    """Delete a folder and everything under it; nothing when it does not exist."""
    loc = location(loc)
    with translated(loc):
        backend(loc).delete_tree(loc)


def local_scratch(loc: Loc) -> Path:
    """A local folder for work a library must do on local disk (img2dataset's output): `loc`
    itself in a local build folder, else one under the temporary directory, named after it."""
    loc = location(loc)
    return loc if isinstance(loc, Path) else Path(tempfile.gettempdir()) / ("fw-" + loc.key.replace("/", "-"))


def clean_tmp(loc: Loc) -> int:
    """Remove temporaries a killed run left in a local folder; returns how many. (An object
    store has none: its uploads are staged on local disk, and one cut short is never visible.)"""
    loc = location(loc)
    if not isinstance(loc, Path) or not loc.exists():
        return 0
    n = 0
    for p in loc.rglob(".*.tmp-*"):
        if p.is_file():
            p.unlink()
            n += 1
    return n


def probe(folder: str | os.PathLike | ObjectPath) -> str | None:
    """Write, read back and delete a small file in `folder`: None when all of it works, else
    what failed (the build folder's check on the driver and on every node)."""
    folder = location(folder)
    p = folder / f".preflight-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        put_bytes(p, b"fusionweave")
        ok = read_bytes(p) == b"fusionweave"
        delete(p)
    except OSError as err:
        return f"cannot write and read {folder}: {err.strerror or err}"
    return None if ok else f"what it wrote in {folder} read back differently"
