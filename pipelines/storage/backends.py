"""The commit primitives of each kind of store, and the only code that differs by store:
- `commit(tmp, loc)`: a finished local file becomes `loc` whole, visible only when complete
  (local: fsync and rename; S3: one upload, aborted rather than completed if it fails; other
  stores: one upload through pyarrow, removed if it fails);
- `create(loc, data)`: `loc` is created only if it does not exist, and says which happened
  (local: a hard link, which fails on an existing name; S3: `If-None-Match: *`; stores that
  have neither: check, then write, which the build folder's lease makes safe).
Everything else (reads, listings) goes through the store's pyarrow filesystem."""
from __future__ import annotations

import contextlib
import errno
import functools
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import IO

import pyarrow.fs as pafs

from fusionweave.pipelines.storage.filesystems import filesystem, s3_client
from fusionweave.pipelines.storage.location import Loc, ObjectPath

READ_AHEAD = 8 << 20  # bytes per request when a remote file is read from start to end
ONE_REQUEST = 8 << 20  # files up to this size are uploaded in one request, larger ones in parts



def tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def is_tmp(name: str) -> bool:
    return name.startswith(".") and ".tmp-" in name


class Backend:
    """Reads and listings through a pyarrow filesystem; the commits of a store without
    conditional writes (pyarrow's upload; check, then write)."""

    def __init__(self, fs: pafs.FileSystem):
        self.fs = fs

    def name(self, loc: Loc) -> str:
        return loc.key if isinstance(loc, ObjectPath) else str(loc)

    def open_input(self, loc: Loc) -> IO[bytes]:
        # raw bytes (no decompression by extension), read ahead in large requests: an object
        # store answers each read call with one ranged GET
        return self.fs.open_input_stream(self.name(loc), compression=None, buffer_size=READ_AHEAD)

    def read_bytes(self, loc: Loc) -> bytes:
        with self.open_input(loc) as f:
            return f.read()

    def staging(self, loc: Loc) -> Path:
        """A local file to write `loc`'s content into before it is committed."""
        return Path(tempfile.gettempdir()) / f".fw-{loc.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"

    def commit(self, tmp: Path, loc: Loc) -> None:
        try:
            with open(tmp, "rb") as src, self.fs.open_output_stream(self.name(loc), compression=None) as dst:
                shutil.copyfileobj(src, dst, 8 << 20)
        except BaseException:
            # pyarrow completes an upload when its stream closes, even after an error
            with contextlib.suppress(Exception):
                self.fs.delete_file(self.name(loc))
            raise

    def create(self, loc: Loc, data: bytes) -> bool:
        if self.fs.get_file_info(self.name(loc)).type != pafs.FileType.NotFound:
            return False
        tmp = self.staging(loc)
        try:
            tmp.write_bytes(data)
            self.commit(tmp, loc)
        finally:
            tmp.unlink(missing_ok=True)
        return True

    def delete_tree(self, loc: Loc) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.delete_dir(self.name(loc))


class LocalBackend(Backend):
    def open_input(self, loc: Loc) -> IO[bytes]:
        return open(loc, "rb")

    def staging(self, loc: Loc) -> Path:
        assert isinstance(loc, Path)
        loc.parent.mkdir(parents=True, exist_ok=True)
        return tmp_name(loc)

    def commit(self, tmp: Path, loc: Loc) -> None:
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, loc)

    def create(self, loc: Loc, data: bytes) -> bool:
        tmp = self.staging(loc)
        try:
            tmp.write_bytes(data)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.link(tmp, loc)  # fails on an existing name: the record is created whole, once
            return True
        except FileExistsError:
            return False
        finally:
            tmp.unlink(missing_ok=True)


class S3Backend(Backend):
    def commit(self, tmp: Path, loc: Loc) -> None:
        from boto3.exceptions import S3UploadFailedError

        assert isinstance(loc, ObjectPath)
        bucket, key = loc.bucket, loc.key.split("/", 1)[1]
        if tmp.stat().st_size <= ONE_REQUEST:
            with open(tmp, "rb") as f:
                s3_client().put_object(Bucket=bucket, Key=key, Body=f)
            return
        # boto3's transfer uploads in parts, and aborts a multipart upload that fails
        try:
            s3_client().upload_file(str(tmp), bucket, key)
        except S3UploadFailedError as err:  # it wraps the server's answer, which says what failed
            raise (err.__context__ or err) from None

    def read_bytes(self, loc: Loc) -> bytes:
        from botocore.exceptions import ClientError

        assert isinstance(loc, ObjectPath)
        try:  # one GET (pyarrow asks for the size first)
            return s3_client().get_object(Bucket=loc.bucket, Key=loc.key.split("/", 1)[1])["Body"].read()
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise FileNotFoundError(errno.ENOENT, "no such object", str(loc)) from None
            raise

    def delete_tree(self, loc: Loc) -> None:
        # pyarrow's delete_dir leaves an empty marker object for the parent folder
        assert isinstance(loc, ObjectPath)
        client = s3_client()
        prefix = loc.key.split("/", 1)[1] + "/" if "/" in loc.key else ""
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=loc.bucket, Prefix=prefix):
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:
                client.delete_objects(Bucket=loc.bucket, Delete={"Objects": keys, "Quiet": True})

    def create(self, loc: Loc, data: bytes) -> bool:
        from botocore.exceptions import ClientError

        assert isinstance(loc, ObjectPath)
        try:
            s3_client().put_object(Bucket=loc.bucket, Key=loc.key.split("/", 1)[1], Body=data, IfNoneMatch="*")
            return True
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") in ("PreconditionFailed", "ConditionalRequestConflict"):
                return False
            raise


@functools.lru_cache(maxsize=None)
def _local() -> LocalBackend:
    return LocalBackend(pafs.LocalFileSystem())


def backend(loc: Loc) -> Backend:
    if isinstance(loc, Path):
        return _local()
    fs = filesystem(loc.scheme)
    return S3Backend(fs) if loc.scheme == "s3" else Backend(fs)
