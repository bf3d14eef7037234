"""Reading annotation files row by row. A file that cannot be read at all stops the build before
any work (bad config); a single malformed row becomes a reject that names its file and line."""
from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from fusionweave.pipelines.errors import BuildSetupError


@dataclass(frozen=True)
class Bad:
    """A row that could not become a record."""

    where: str  # file:line or file:index
    reason: str
    detail: str


Row = dict[str, Any]


def load_json(path: Path, what: str) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BuildSetupError(f"{what}: file not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise BuildSetupError(f"{what}: {path} is not valid JSON: {err}") from None


def read_text(path: Path, what: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BuildSetupError(f"{what}: file not found: {path}") from None
    except UnicodeDecodeError as err:
        raise BuildSetupError(f"{what}: {path} is not UTF-8 text: {err}") from None


def parse_line(line: str) -> list[str]:
    """One physical line as CSV fields (the annotation CSVs have no multi-line fields, so an
    unbalanced quote stays this line's problem instead of swallowing the rows after it)."""
    return next(csv.reader([line], skipinitialspace=True, strict=True))


def csv_rows(path: Path, what: str, required: tuple[str, ...], columns: tuple[str, ...] | None = None,
             comment: str | None = None) -> Iterator[Row | Bad]:
    """Rows of a CSV as dicts. With `columns` the file may have no header (Cap3D ships none); a
    first row equal to `columns` is taken as the header. A row that does not parse, has the wrong
    number of fields or an empty required field is a Bad row."""
    header: list[str] | None = list(columns) if columns else None
    first = True
    for i, line in enumerate(read_text(path, what).splitlines(), 1):
        if not line.strip() or (comment and line.lstrip().startswith(comment)):
            continue
        try:
            row = parse_line(line)
        except csv.Error as err:
            yield Bad(f"{path}:{i}", "malformed_row", f"not CSV: {err}")
            first = False
            continue
        is_first, first = first, False
        if header is None or (columns and is_first and [c.strip() for c in row] == list(columns)):
            header = [c.strip() for c in row]
            missing = [c for c in required if c not in header]
            if missing:
                raise BuildSetupError(f"{what}: {path} has no column(s) {missing}; header: {header}")
            continue
        if len(row) != len(header):
            yield Bad(f"{path}:{i}", "malformed_row", f"{len(row)} fields, the header has {len(header)}")
            continue
        rec = dict(zip(header, row))
        empty = [c for c in required if not rec[c].strip()]
        if empty:
            yield Bad(f"{path}:{i}", "malformed_row", f"empty {empty}")
            continue
        yield rec


def json_entries(data: Any, path: Path, required: tuple[str, ...]) -> Iterator[Row | Bad]:
    """Entries of a JSON list; a non-object entry or one missing a required field is Bad."""
    for i, e in enumerate(data):
        if not isinstance(e, dict):
            yield Bad(f"{path}[{i}]", "malformed_row", f"entry is {type(e).__name__}, not an object")
            continue
        missing = [k for k in required if e.get(k) in (None, "", [])]
        if missing:
            yield Bad(f"{path}[{i}]", "malformed_row", f"missing {missing}")
            continue
        yield e


def as_list(data: Any, path: Path, what: str, key: str | None = None) -> list[Any]:
    if key is not None and isinstance(data, dict):
        data = data.get(key)
    if not isinstance(data, list):
        raise BuildSetupError(f"{what}: {path} should hold a list{f' under {key!r}' if key else ''}")
    return data


def texts(v: Any) -> list[str]:
    """A caption or answer field as a list of strings (LAVIS eval files hold lists)."""
    vals = v if isinstance(v, list) else [v]
    return [str(x) for x in vals]


def to_csv(rows: list[Row], columns: list[str], header: bool = True) -> bytes:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    if header:
        w.writeheader()
    w.writerows(rows)
    return buf.getvalue().encode("utf-8")


def to_json(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, indent=1).encode("utf-8")
