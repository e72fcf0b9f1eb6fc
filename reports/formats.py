"""Rows of a command's answer in the formats its peers offer (llama-bench's ``-o md|csv|json|jsonl``).

``table`` is rich's console table (the default, for people); ``md`` pastes into an issue or a PR; ``csv`` and
``json``/``jsonl`` feed a spreadsheet, pandas or a CI script. Machine formats carry the raw values (bytes as
integers, seconds as floats, units in the column names); the human ones carry formatted text.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any, Iterable, Mapping, Sequence

FORMATS = ("table", "md", "csv", "json", "jsonl")


def _cell(v: Any) -> str:
    text = "" if v is None else str(v)
    return text.replace("|", "\\|").replace("\n", " ")


def markdown(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def machine(records: Sequence[Mapping[str, Any]], fmt: str) -> str:
    """``records`` (dicts of raw values) as csv, json or jsonl."""
    if fmt == "json":
        return json.dumps(list(records), indent=1, default=str) + "\n"
    if fmt == "jsonl":
        return "".join(json.dumps(r, default=str) + "\n" for r in records)
    if fmt == "csv":
        keys = list(dict.fromkeys(k for r in records for k in r))
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
        w.writeheader()
        for r in records:
            w.writerow({k: json.dumps(v) if isinstance(v, (dict, list, tuple)) else v for k, v in r.items()})
        return buf.getvalue()
    raise ValueError(f"not a machine format: {fmt}")


def rich_table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]], right: Sequence[str] = ()) -> Any:
    """A rich Table whose cells are literal text (user strings never parsed as markup)."""
    from rich.table import Table
    from rich.text import Text

    t = Table(title=Text(title) if title else None)
    for c in columns:
        t.add_column(c, justify="right" if c in right else "left")
    for row in rows:
        t.add_row(*(Text("" if v is None else str(v)) for v in row))
    return t
