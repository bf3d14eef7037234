"""Write-then-commit, so no partial file is ever visible under its final name. The commit
itself belongs to the storage layer (`store`): a rename on local disk, one upload on an object
store; these are the names the pipelines write through."""
from __future__ import annotations

from fusionweave.pipelines.storage.store import atomic_path, clean_tmp, is_tmp, put_bytes, tmp_name

write_bytes_atomic = put_bytes

__all__ = ["atomic_path", "clean_tmp", "is_tmp", "tmp_name", "write_bytes_atomic"]
