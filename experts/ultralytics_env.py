"""Import ultralytics without its side effects on a data pipeline.

Importing it replaces `PIL.Image.open` process-wide with a version that, on any unidentified
image, tries to pip-install a HEIF plugin and retry: a corrupt image would then cost a package
install attempt (and a misleading error). We mark its plugins as registered so the original
open runs, and keep it offline.
"""
from __future__ import annotations

import os
from typing import Any


def ultralytics() -> Any:
    os.environ.setdefault("YOLO_OFFLINE", "1")
    import ultralytics as ul
    from ultralytics.utils import patches

    patches._pil_plugins_registered = True
    return ul
