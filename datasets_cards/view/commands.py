"""`fusionweave view` and `fusionweave trace`: argument parsers and handlers. Errors a user can
fix (a folder that is not a build, a key not in it) are one line and a nonzero exit."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"  # the viewer never listens on another address


class ViewError(Exception):
    """A one-line error for the user (exit 2)."""


def add_parsers(sub: Any) -> None:
    v = sub.add_parser("view", help="browse a build in a local web viewer (127.0.0.1 only), or write it as a static site")
    v.add_argument("out", type=Path, help="build folder")
    v.add_argument("--port", type=int, default=8000, help="port on 127.0.0.1 (0: any free port)")
    v.add_argument("--static", dest="static", type=Path, default=None, metavar="SITE_DIR",
                   help="write a static site to SITE_DIR (opens from file://) instead of serving")
    v.add_argument("--limit", type=int, default=200,
                   help="static site: sample pages per stage (default 200; the funnel and rejects are always whole)")

    t = sub.add_parser("trace", help="a sample's whole history in a build: source row, stages and steps, experts, "
                                     "caption, where it was rejected")
    t.add_argument("out", type=Path, help="build folder")
    t.add_argument("key", help="the sample's key")
    t.add_argument("--json", action="store_true", help="print JSON")


def _open(out: Path) -> Any:
    from fusionweave.datasets_cards.view.reader import NotABuild, open_build

    try:
        return open_build(out)
    except NotABuild as err:
        raise ViewError(str(err)) from None


def cmd_trace(args: argparse.Namespace) -> int:
    from fusionweave.datasets_cards.view.trace import UnknownKey, render_text, trace

    view = _open(args.out)
    try:
        t = trace(view, args.key)
    except UnknownKey as err:
        if args.json:
            print(json.dumps({"key": err.key, "found": False, "closest": err.suggestions}))
        print(f"fusionweave: {err}", file=sys.stderr)
        return 1
    print(json.dumps(t, indent=2, default=str, ensure_ascii=False) if args.json else render_text(t))
    return 0


def cmd_view(args: argparse.Namespace) -> int:
    view = _open(args.out)
    if args.static is not None:
        from fusionweave.datasets_cards.view.static import export

        n = export(view, args.static, limit=args.limit)
        print(f"wrote {n} files to {args.static}; open {Path(args.static).resolve() / 'index.html'}")
        return 0
    from fusionweave.datasets_cards.view.server import serve

    serve(view, port=args.port)
    return 0


def run(args: argparse.Namespace) -> int:
    """Dispatch `view` / `trace`; what the user can fix is one line on stderr, never a traceback."""
    handler = {"view": cmd_view, "trace": cmd_trace}[args.command]
    try:
        return int(handler(args) or 0)
    except ViewError as err:
        print(f"fusionweave: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # unreadable files, a port in use, a vanished folder
        where = f"{err.filename}: " if getattr(err, "filename", None) else ""
        print(f"fusionweave: {args.command}: {where}{err.strerror or err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
