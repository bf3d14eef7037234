"""Workers load one module of img2dataset and of webdataset, not the whole tools (their
`__init__` imports torch, pandas, albumentations and cv2), and split member names exactly as
webdataset does."""
from __future__ import annotations

import subprocess
import sys

import pytest

from fusionweave.pipelines.storage.shard_source import key_and_ext


def test_one_module_without_the_package_and_the_package_whole_after() -> None:
    code = """
import sys
from fusionweave.pipelines.lean_import import import_module_only
writer = import_module_only("webdataset.writer")
downloader = import_module_only("img2dataset.downloader")
heavy = sorted(m for m in ("torch", "pandas", "albumentations", "cv2") if m in sys.modules)
assert not heavy, heavy
assert "webdataset" not in sys.modules and "img2dataset" not in sys.modules
assert import_module_only("webdataset.writer") is writer
import webdataset, img2dataset  # the real packages, whole
assert hasattr(webdataset, "WebDataset") and hasattr(img2dataset, "download")
print("ok")
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]


def test_a_missing_package_is_an_import_error() -> None:
    from fusionweave.pipelines.lean_import import import_module_only

    with pytest.raises(ImportError, match="not installed"):
        import_module_only("no_such_package_here.module")


@pytest.mark.parametrize("name", ["a.jpg", "a/b.c.d", "dir/key.seg.png", "noext", "dir/", ".hidden", "dir/.hidden",
                                  "a.b/c.d", "a.b/c", "x..y", "k.", "./k.txt", "__key__.json", "a/b/c.tar.gz"])
def test_member_names_split_as_webdataset_splits_them(name: str) -> None:
    from webdataset.tariterators import base_plus_ext

    assert key_and_ext(name) == base_plus_ext(name)
