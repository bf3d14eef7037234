"""Where a file lives, as one value: a local `Path`, or an `ObjectPath` for a URI such as
`s3://bucket/key` or `gs://bucket/key`. Pure names, no I/O: the storage layer (`store`) reads
and writes both. An ObjectPath joins and splits like a PurePosixPath, so code that builds
`folder / "shard-000000.tar"` works unchanged whichever it holds."""
from __future__ import annotations

import os
import re
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Union

from pydantic import PlainSerializer, PlainValidator, SerializationInfo, WithJsonSchema

URI = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://(.*)$")


class ObjectPath:
    """`scheme://bucket/key...`, normalised (no empty, `.` or `..` segments, no trailing slash)."""

    __slots__ = ("scheme", "key")

    def __init__(self, uri: str):
        m = URI.match(uri)
        if m is None:
            raise ValueError(f"{uri!r} is not a URI (scheme://bucket/key)")
        parts = [p for p in m.group(2).split("/") if p]
        if not parts or any(p in (".", "..") for p in parts):
            raise ValueError(f"{uri!r}: a URI names a bucket and a key, without '.' or '..'")
        self.scheme = m.group(1).lower()
        self.key = "/".join(parts)  # "bucket/a/b", as pyarrow's filesystems name it

    @classmethod
    def _make(cls, scheme: str, key: str) -> "ObjectPath":
        p = cls.__new__(cls)
        p.scheme, p.key = scheme, key
        return p

    def __str__(self) -> str:
        return f"{self.scheme}://{self.key}"

    def __repr__(self) -> str:
        return f"ObjectPath({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ObjectPath) and (self.scheme, self.key) == (other.scheme, other.key)

    def __hash__(self) -> int:
        return hash((self.scheme, self.key))

    def __lt__(self, other: "ObjectPath") -> bool:
        return str(self) < str(other)

    def __truediv__(self, name: str | os.PathLike) -> "ObjectPath":
        return ObjectPath(f"{self}/{os.fspath(name) if not isinstance(name, str) else name}")

    @property
    def _pure(self) -> PurePosixPath:
        return PurePosixPath(self.key)

    @property
    def name(self) -> str:
        return self._pure.name

    @property
    def stem(self) -> str:
        return self._pure.stem

    @property
    def suffix(self) -> str:
        return self._pure.suffix

    @property
    def parts(self) -> tuple[str, ...]:
        return self._pure.parts

    @property
    def bucket(self) -> str:
        return self.parts[0]

    @property
    def parent(self) -> "ObjectPath":
        return self if len(self.parts) == 1 else ObjectPath._make(self.scheme, str(self._pure.parent))

    def with_name(self, name: str) -> "ObjectPath":
        return self.parent / name

    def relative_to(self, other: "ObjectPath") -> PurePosixPath:
        if not isinstance(other, ObjectPath) or other.scheme != self.scheme:
            raise ValueError(f"{self} is not under {other}")
        return self._pure.relative_to(other.key)

    def is_relative_to(self, other: object) -> bool:
        return isinstance(other, ObjectPath) and other.scheme == self.scheme and self._pure.is_relative_to(other.key)

    def is_absolute(self) -> bool:
        return True


Loc = Union[Path, ObjectPath]


def is_uri(value: object) -> bool:
    return isinstance(value, ObjectPath) or (isinstance(value, str) and URI.match(value) is not None
                                             and not value.startswith("file://"))


def location(value: str | os.PathLike | ObjectPath) -> Loc:
    """A URI as an ObjectPath (`file://` as a local Path), anything else as a Path."""
    if isinstance(value, ObjectPath):
        return value
    text = os.fspath(value)
    if isinstance(text, bytes):
        text = text.decode()
    if text.startswith("file://"):
        return Path(text[len("file://"):])
    return ObjectPath(text) if URI.match(text) else Path(text)


def absolute(value: str | os.PathLike | ObjectPath) -> Loc:
    """A local path made absolute against this (the driver's) working directory; a URI as is."""
    loc = location(value)
    return loc if isinstance(loc, ObjectPath) else Path(os.path.abspath(loc))


def _validate(value: Any) -> Loc:
    if not isinstance(value, (str, os.PathLike, ObjectPath)):
        raise ValueError(f"expected a path or a URI, got {type(value).__name__}")
    return location(value)


def _serialize(value: Loc, info: SerializationInfo) -> Any:
    return str(value) if info.mode_is_json() else value


# a config field holding a local path or a URI (`s3://bucket/key`): written as a string
StoragePath = Annotated[Loc, PlainValidator(_validate), PlainSerializer(_serialize), WithJsonSchema({"type": "string"})]
