"""An img2dataset sample writer that keeps the samples in this process.

img2dataset's `Downloader` hands every URL's outcome to a writer (`write(img_str, key, caption,
meta)`, then `close()`). Its own writers put them in a tar and a parquet file, which the
download would then read back; this one keeps them in memory, so the bytes go straight on to
the download's shard, or to the decode when download and validate run as one pass."""
from __future__ import annotations

from typing import Any, ClassVar


class MemorySampleWriter:
    """Registered by output folder: the caller gives each shard a folder of its own and takes
    the rows back with `take(folder)` once the downloader returns."""

    _written: ClassVar[dict[str, list[tuple[dict[str, Any], bytes | None]]]] = {}

    def __init__(self, shard_id: int, output_folder: str, save_caption: bool, oom_shard_count: int, schema: Any,
                 encode_format: str):
        self.rows: list[tuple[dict[str, Any], bytes | None]] = []
        MemorySampleWriter._written[output_folder] = self.rows

    def write(self, img_str: bytes | None, key: str, caption: str | None, meta: dict[str, Any]) -> None:
        self.rows.append((dict(meta), img_str))

    def close(self) -> None:
        pass

    @classmethod
    def take(cls, output_folder: str) -> list[tuple[dict[str, Any], bytes | None]]:
        """(img2dataset's meta: status, error_message and our columns; the bytes, None unless the
        download succeeded) for every URL of the shard, in completion order."""
        return cls._written.pop(output_folder, [])
