"""img2dataset's `Downloader`, imported without running the package's `__init__`.

`import img2dataset` imports the whole tool: its CLI, readers, writers and their dependencies
(pandas, webdataset and with it torch, albumentations, cv2), about 3 s in every fresh worker, and
a 2-core node starts four download workers. The download needs one class, whose own module
imports 0.4 s of it. The package stands in `sys.modules` only while that module is imported;
a later `import img2dataset` runs the real `__init__`, which finds the module already loaded."""
from __future__ import annotations

import importlib.util
import sys
import types
from typing import Any


def downloader_class() -> Any:
    if "img2dataset.downloader" not in sys.modules and "img2dataset" not in sys.modules:
        spec = importlib.util.find_spec("img2dataset")
        if spec is None or not spec.submodule_search_locations:
            raise ImportError("img2dataset is not installed (pip install 'fusionweave[download]')")
        package = types.ModuleType("img2dataset")
        package.__path__ = list(spec.submodule_search_locations)
        package.__spec__ = spec
        sys.modules["img2dataset"] = package
        try:
            import img2dataset.downloader  # noqa: F401
        finally:
            del sys.modules["img2dataset"]
    from img2dataset.downloader import Downloader

    return Downloader
