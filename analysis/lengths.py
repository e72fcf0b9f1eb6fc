"""Output lengths from a dataset -> the max_new_tokens that covers them (the user's n-predict table).

Reads token counts (JSONL, JSON list, CSV or plain text; texts with a local tokenizer) and turns them into
percentiles and a coverage table of power-of-two caps. Runs in the parent: transformers is imported only when
a file holds texts that need tokenizing.
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from loadprof.core.errors import SpecError

LENGTH_KEYS = ("tokens", "length", "n_tokens", "output_tokens")
SCENARIOS = (("conservative", 75, "quick benchmarks"), ("recommended", 90, "standard evaluation"),
             ("comprehensive", 99, "thorough testing"))
PERCENTILES = (50, 75, 90, 95, 99)


def _nearest_rank(sorted_xs: Sequence[int], q: float) -> int:
    """An observed value with at least q% of the data at or below it (so a cap there covers >= q%)."""
    return sorted_xs[max(0, math.ceil(q / 100.0 * len(sorted_xs)) - 1)]


def _pow2_up(n: int) -> int:
    return 1 if n <= 1 else 1 << (n - 1).bit_length()


@dataclass(frozen=True)
class CoverageRow:
    """One scenario of the n-predict table: the cap (a power of two) at its percentile of the observed lengths,
    the share of outputs it covers, and half that cap with its own coverage (None when the percentile is a
    power of two already)."""

    scenario: str
    percentile: int
    percentile_tokens: int
    percentile_coverage_pct: float
    cap: int
    coverage_pct: float
    lower_cap: int | None
    lower_cap_coverage_pct: float | None
    prompt_tokens: int | None
    use_case: str


@dataclass(frozen=True)
class LengthsCoverage:
    """Output lengths (n of them) as percentiles (nearest rank) and the caps that cover them."""

    n: int
    mean: float
    percentiles: Mapping[str, int]
    rows: tuple[CoverageRow, ...]
    prompt_tokens: int | None
    method: str = "nearest-rank"

    @property
    def recommended_max_new_tokens(self) -> int:
        """The ``recommended`` scenario's cap: p90 rounded up to a power of two."""
        return next(r.cap for r in self.rows if r.scenario == "recommended")


def lengths_coverage(lengths: Sequence[int], prompt_tokens: int | None = None) -> LengthsCoverage:
    """Percentiles of output lengths and a max_new_tokens table like the user's (cap, share of outputs covered)."""
    if not lengths:
        raise SpecError("no output lengths given")
    xs, n = sorted(int(x) for x in lengths), len(lengths)

    def cover(cap: int) -> float:
        return 100.0 * sum(1 for x in xs if x <= cap) / n

    pct = {f"p{q}": _nearest_rank(xs, q) for q in PERCENTILES} | {"max": xs[-1]}
    rows = []
    for scenario, q, use in SCENARIOS:
        v = pct[f"p{q}"]
        cap = _pow2_up(v)
        lower = cap // 2 if cap > v and cap > 1 else None
        rows.append(CoverageRow(scenario, q, v, cover(v), cap, cover(cap), lower, cover(lower) if lower else None,
                                prompt_tokens, use))
    return LengthsCoverage(n, statistics.fmean(xs), pct, tuple(rows), prompt_tokens)


def _count(given: Any, where: str, path: Path) -> int:
    if isinstance(given, list):
        return len(given)  # token ids
    value = given.strip() if isinstance(given, str) else given
    if isinstance(value, str) and _is_number(value):
        value = float(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0 and float(value).is_integer():
        return int(value)
    raise SpecError(f"{where}: expected a token count (integer >= 0), got {given!r}", path=str(path))


def _json_item(obj: Any, where: str, path: Path) -> tuple[str, Any, bool]:
    if isinstance(obj, Mapping):
        key = next((k for k in LENGTH_KEYS if k in obj), None)
        if key is None and isinstance(obj.get("text"), str):
            return where, obj["text"], True
        if key is None:
            raise SpecError(f"{where}: expected a number or an object with one of {', '.join(LENGTH_KEYS)} or text, "
                            f"got keys {sorted(obj)}", path=str(path))
        obj = obj[key]
    return where, obj, False


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def read_lengths(path: Path | str, tokenizer: str | None = None) -> list[int]:
    """Output lengths from JSONL (or a JSON list), CSV or one number per line.

    ``text`` entries are counted with a local tokenizer folder (transformers imported only then); every error names
    the file, the line and the value, so a bad row in a 100k-line dump is found at once.
    """
    path = Path(path)
    try:
        raw = path.read_text()
    except OSError as e:
        raise SpecError(f"cannot read lengths file: {e.strerror}", path=str(path)) from None
    lines = raw.splitlines()
    first = next((ln.strip() for ln in lines if ln.strip()), "")
    kind = path.suffix.lower()
    items: list[tuple[str, Any, bool]] = []  # (where, value, is_text)
    whole: Any = None
    if first.startswith("["):
        try:
            whole = json.loads(raw)
        except json.JSONDecodeError:
            whole = None
    if isinstance(whole, list):
        items = [_json_item(obj, f"item {i}", path) for i, obj in enumerate(whole, 1)]
    elif kind in (".jsonl", ".ndjson", ".json") or first.startswith("{"):
        items = _jsonl_items(lines, path)
    elif kind == ".csv" or "," in first:
        items = _csv_items(raw, path)
    else:
        items = [(f"line {i}", ln, False) for i, ln in enumerate(lines, 1) if ln.strip()]
    texts = [w for w, _, is_text in items if is_text]
    tok = _tokenizer(tokenizer, path, texts[0]) if texts else None
    out = [len(tok(v, add_special_tokens=False)["input_ids"]) if is_text else _count(v, w, path)
           for w, v, is_text in items]
    if not out:
        raise SpecError("no output lengths found", path=str(path))
    return out


def _jsonl_items(lines: list[str], path: Path) -> list[tuple[str, Any, bool]]:
    items = []
    for i, line in enumerate(lines, 1):
        if line.strip():
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                raise SpecError(f"line {i}: not JSON: {line.strip()[:60]!r}", path=str(path)) from None
            items.append(_json_item(obj, f"line {i}", path))
    return items


def _csv_items(raw: str, path: Path) -> list[tuple[str, Any, bool]]:
    """The length column (or a text column to tokenize); a lone numeric column may have no header."""
    reader = csv.reader(io.StringIO(raw))
    header = next(reader, [])
    names = [h.strip().lower() for h in header]
    col = next((names.index(k) for k in LENGTH_KEYS if k in names), None)
    is_text = col is None and "text" in names
    if is_text:
        col = names.index("text")
    items: list[tuple[str, Any, bool]] = []
    if col is None:
        if len(header) != 1:
            raise SpecError(f"line 1: no column named {' or '.join((*LENGTH_KEYS, 'text'))} in {header}",
                            path=str(path))
        col = 0
        if _is_number(header[0]):  # a bare numeric column: no header line
            items.append(("line 1", header[0], False))
    for row in reader:
        if any(c.strip() for c in row):
            where = f"line {reader.line_num}"
            if col >= len(row):
                raise SpecError(f"{where}: missing column {header[col]!r} in {row}", path=str(path))
            items.append((where, row[col], is_text))
    return items


def _tokenizer(name: str | None, path: Path, where: str) -> Any:
    if name is None:
        raise SpecError(f"{where}: has text, which needs a tokenizer to count tokens", path=str(path),
                        hint="pass --tokenizer PATH (a local tokenizer folder) or give token counts instead")
    from transformers import AutoTokenizer  # lazy: only when texts are present

    try:
        return AutoTokenizer.from_pretrained(name, local_files_only=True)
    except Exception as e:  # a folder without tokenizer files fails in many ways; all mean "bad --tokenizer"
        raise SpecError(f"cannot load tokenizer {name!r}: {e}", path="--tokenizer") from None


# ---------------------------------------------------------------- CLI
