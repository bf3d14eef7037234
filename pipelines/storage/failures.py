"""When a store fails: its errors (pyarrow's S3/GCS errors carry no errno; boto3's are its own)
become a `StorageError`, an OSError with an errno and the URI, so the CLI reports them in one
line and a reader never takes a store's failure for a broken file."""
from __future__ import annotations

import contextlib
import errno
from pathlib import Path
from typing import Any, Iterator

from fusionweave.pipelines.storage.filesystems import endpoint_of
from fusionweave.pipelines.storage.location import Loc


class StorageError(OSError):
    """The store failed or refused (errno: EIO unreachable, EACCES refused, ENOENT no bucket)."""


# what an S3 error names -> errno; anything else that is not "not found" is EIO (transient)
_CODES = {"ACCESS_DENIED": errno.EACCES, "AccessDenied": errno.EACCES, "INVALID_ACCESS_KEY_ID": errno.EACCES,
          "InvalidAccessKeyId": errno.EACCES, "SIGNATURE_DOES_NOT_MATCH": errno.EACCES,
          "SignatureDoesNotMatch": errno.EACCES, "EXPIRED_TOKEN": errno.EACCES, "ExpiredToken": errno.EACCES,
          "NO_SUCH_BUCKET": errno.ENOENT, "NoSuchBucket": errno.ENOENT}


def _reason(text: str) -> str:
    """pyarrow's AWS error text, shortened to what it says ("AWS Error X during Op: msg (Request ID...)")."""
    text = " ".join(text.split())
    if "AWS Error" in text:
        text = text[text.index("AWS Error"):]
    return text.split(" (Request ID")[0][:300]


def _classify(err: BaseException) -> tuple[int, str] | None:
    """(errno, reason) when `err` is an object store's failure (pyarrow's S3/GCS errors, which
    carry no errno, and boto3's); None for anything else ("not found" included)."""
    try:
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:  # pragma: no cover - boto3 comes with the install
        BotoCoreError = ClientError = ()  # type: ignore[assignment,misc]
    if isinstance(err, StorageError):
        return err.errno, err.strerror
    if isinstance(err, ClientError):
        name = err.response.get("Error", {}).get("Code", "")
        return _CODES.get(name, errno.EIO), f"{name}: {err.response.get('Error', {}).get('Message', '')}"
    if isinstance(err, BotoCoreError) or (isinstance(err, OSError) and not isinstance(err, FileNotFoundError)
                                          and not err.errno and ("AWS Error" in str(err) or "GCS" in str(err))):
        text = _reason(str(err))
        return next((c for k, c in _CODES.items() if k in text), errno.EIO), text
    return None


def failure_reason(err: BaseException) -> str | None:
    """One line when `err` is an object store's failure, wherever it was raised; else None."""
    found = _classify(err)
    return found[1] if found is not None else None


def storage_error(err: BaseException, loc: Loc) -> BaseException:
    """A store's failure as a StorageError naming `loc`; anything else unchanged."""
    found = None if isinstance(loc, Path) or isinstance(err, StorageError) else _classify(err)
    if found is None:
        return err
    code, text = found
    if code == errno.ENOENT:
        text = f"bucket {loc.bucket} does not exist ({text})"
    elif code == errno.EACCES:
        text = f"access refused: check the credentials (AWS_* environment, --storage-option) ({text})"
    elif "NETWORK_CONNECTION" in text or "Could not connect" in text:
        text = f"cannot reach {endpoint_of(loc.scheme) or 'the object store'} ({text})"
    elif (ep := endpoint_of(loc.scheme)) is not None:
        text = f"{text} (endpoint {ep})"
    return StorageError(code, text, str(loc))


@contextlib.contextmanager
def translated(loc: Loc) -> Iterator[None]:
    try:
        yield
    except Exception as err:  # noqa: BLE001 - translated (a store's failure) or re-raised unchanged
        new = storage_error(err, loc)
        if new is err:
            raise
        raise new from None



class Guarded:
    """A remote stream whose read failures are the store's (StorageError), never taken for
    a broken file: a shard cut off by the network is not a broken shard."""

    def __init__(self, f: Any, loc: Loc):
        self.f, self.loc = f, loc

    def read(self, n: int | None = -1) -> bytes:
        with translated(self.loc):
            return self.f.read(None if n is None or n < 0 else n)

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self.f.close()

    def __enter__(self) -> "Guarded":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
