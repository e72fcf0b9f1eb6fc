"""What ``loadprof diff`` concluded, typed: one ``DiffRow`` per compared figure, the ``DiffResult`` with the gate's
exit code and its counts.

Analysis (loadprof.analysis.diff) builds them; the CLI's renderers read their attributes; ``to_dict`` is the JSON
``loadprof diff --format json|jsonl`` prints, key for key and in the order it had when the diff was a dict (a
script reading it must not notice the types).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

#: a row's JSON keys around ``p``, which only a row the t-test was asked about carries (None: too few repeats)
_ROW_HEAD = ("strategy", "strategy_id_a", "strategy_id_b", "match", "kind", "name", "group", "unit", "a", "b",
             "change")
_ROW_TAIL = ("change_pct", "lo", "hi", "noise", "limit", "beyond_floor", "distinguishable", "n_a", "n_b",
             "lower_is_better", "verdict", "gated")


@dataclass(frozen=True)
class DiffRow:
    """One figure of one matched strategy on both sides: medians (``a``, ``b``; a status change holds the two
    statuses), the difference with its bootstrap CI (``lo``..``hi``, half-width ``noise``), the floor it had to
    pass (``limit``), the verdict and whether it gates.

    ``kind``: metric, phase or status. ``judged``: both sides had numbers, so a p-value was asked for (``p`` is in
    the JSON, None below the minimum repeats); a phase on one side only or a status change is not judged.
    """

    kind: str
    name: str
    group: str
    unit: str
    a: float | str | None
    b: float | str | None
    verdict: str
    n_a: int
    n_b: int
    change: float | None = None
    change_pct: float | None = None
    lo: float | None = None
    hi: float | None = None
    noise: float | None = None
    limit: float | None = None
    beyond_floor: bool = False
    distinguishable: bool | None = None
    lower_is_better: bool = True
    judged: bool = False
    p: float | None = None
    strategy: str = ""
    strategy_id_a: str = ""
    strategy_id_b: str = ""
    match: str = ""
    gated: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in (*_ROW_HEAD, *(("p",) if self.judged else ()), *_ROW_TAIL)}


@dataclass(frozen=True)
class MatchedPair:
    """Two strategies compared with each other: by strategy id, or by a label unique on both sides."""

    label: str
    strategy_id_a: str
    strategy_id_b: str
    match: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Unmatched:
    """A strategy on one side only (``side``: a or b), never compared."""

    side: str
    label: str
    strategy_id: str
    trial_ids: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "trial_ids": list(self.trial_ids)}


@dataclass(frozen=True)
class DiffSide:
    """One of the two sweeps: its run, its name and the strategy labels it holds (what to match on)."""

    run_id: str
    name: str
    labels: tuple[str, ...]


@dataclass(frozen=True)
class DiffResult:
    """Every row of every matched strategy with the gate's verdict (``exit_code``, ``exit_reason``).

    ``regressions``, ``improvements``, ``undecided``: those rows, worst first; ``same``: how many rows were within
    noise or under the floors; ``notes``: what makes the comparison less fair without gating it.
    """

    a: DiffSide
    b: DiffSide
    threshold_pct: float
    min_abs_s: float
    fail_on: tuple[str, ...]
    method: str
    matched: tuple[MatchedPair, ...]
    rows: tuple[DiffRow, ...]
    regressions: tuple[DiffRow, ...]
    improvements: tuple[DiffRow, ...]
    undecided: tuple[DiffRow, ...]
    same: int
    unmatched: tuple[Unmatched, ...]
    exit_code: int
    exit_reason: str
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        rows = lambda rs: [r.to_dict() for r in rs]  # noqa: E731
        return {"a": {"run_id": self.a.run_id, "name": self.a.name}, "b": {"run_id": self.b.run_id, "name": self.b.name},
                "threshold_pct": self.threshold_pct, "min_abs_s": self.min_abs_s, "fail_on": list(self.fail_on),
                "method": self.method, "matched": [m.to_dict() for m in self.matched], "rows": rows(self.rows),
                "summary": {"regressions": rows(self.regressions), "improvements": rows(self.improvements),
                            "same": self.same, "undecided": rows(self.undecided),
                            "unmatched": [u.to_dict() for u in self.unmatched]},
                "sides": {"a": list(self.a.labels), "b": list(self.b.labels)},
                "exit_code": self.exit_code, "exit_reason": self.exit_reason, "notes": list(self.notes)}
