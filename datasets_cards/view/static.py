"""`fusionweave view OUT --static SITE_DIR`: the viewer's pages written as files. The app's pages
are rendered in-process (Flask's test client) starting from the funnel and following every
relative link and image, so the site is exactly what the server shows, minus the query filters;
all links are relative, so it opens from file:// or can be published beside the card."""
from __future__ import annotations

import posixpath
import re
import shutil
from collections import deque
from pathlib import Path
from urllib.parse import unquote

from fusionweave.datasets_cards.view.reader import BuildView
from fusionweave.datasets_cards.view.server import create_app

LINK = re.compile(r'(?:href|src)="([^"#?:]+)"')


class StaticError(Exception):
    pass


def export(view: BuildView, site: str | Path, limit: int = 200) -> int:
    """Write the site; returns the number of files. `limit`: sample pages per stage."""
    site = Path(site)
    if site.exists() and not site.is_dir():
        raise OSError(20, "not a folder", str(site))
    if site.exists() and any(site.iterdir()) and not (site / "index.html").exists():
        raise OSError(17, "not empty and not a site written by fusionweave view (no index.html); refusing to "
                          "write into it", str(site))
    if site.exists():
        shutil.rmtree(site)
    site.mkdir(parents=True)
    root = site.resolve()
    client = create_app(view, static_limit=limit).test_client()
    todo: deque[str] = deque(["/index.html"])
    seen = {"/index.html"}
    written = 0
    while todo:
        url = todo.popleft()
        resp = client.get(url)
        if resp.status_code != 200:
            continue
        dest = (root / url.lstrip("/")).resolve()
        if root not in dest.parents:  # a link that would leave the site is never written
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(resp.data)
        written += 1
        if url.endswith(".html"):
            base = posixpath.dirname(url)
            for link in LINK.findall(resp.get_data(as_text=True)):
                target = posixpath.normpath(posixpath.join(base, unquote(link)))
                if target.startswith("/") and target not in seen:
                    seen.add(target)
                    todo.append(target)
    return written
