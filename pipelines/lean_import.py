"""One module of a package, imported without running the package's `__init__`.

Some packages' `__init__` imports the whole tool: img2dataset's its CLI, readers and writers
(pandas, webdataset and torch, albumentations, cv2: about 3 s), webdataset's torch (about 1.2 s
and 300 MB). Every fresh worker that needs one class of them would pay for all of it. While the
module is imported a bare stand-in takes the package's place; afterwards neither stays in
`sys.modules`, so a later `import package` in the same process gets the real package, whole."""
from __future__ import annotations

import functools
import importlib
import importlib.util
import sys
import types


@functools.cache  # once per process: the module is not in sys.modules to be found again
def import_module_only(name: str) -> types.ModuleType:
    """The module `name` (dotted), loaded without its package's `__init__` unless that already ran."""
    package = name.rpartition(".")[0]
    if package in sys.modules:
        return importlib.import_module(name)
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"{package} is not installed")
    stand_in = types.ModuleType(package)
    stand_in.__path__ = list(spec.submodule_search_locations)
    stand_in.__spec__ = spec
    sys.modules[package] = stand_in
    try:
        return importlib.import_module(name)
    finally:
        for loaded in [m for m in sys.modules if m == package or m.startswith(package + ".")]:
            del sys.modules[loaded]
