"""Compare two sweeps strategy by strategy: what got worse, beyond run-to-run noise, for a CI gate.

Pure analysis over two SweepResults (parent process: no torch, no files, no rendering). A change is a
regression only when both hold: the repeats tell the two sides apart, and the change exceeds the floors,
``threshold_pct`` of the old value and an absolute minimum (so tiny but real drifts, and microsecond phases,
never fail a build). A gate fails when *any* of its comparisons fails, so the test controls the error over all
of them at once: Student's t-test on log values per figure, Holm's correction across every gated comparison
(``stats.GATE_METHOD``); without it, 20 comparisons at 5% each would fail a build on pure noise most of the
time. The ± shown is the bootstrap CI of the difference of medians. Fewer than ``stats.MIN_REPEATS`` repeats
never decide: such rows are ``undecided`` and the diff says so (exit 3).

Every figure belongs to one group (``GROUPS``), the unit ``--fail-on`` selects. By default the headline figures
gate (real load cost, TTFT, prefill and decode rates, peak memory, status); the phases are shown, judged with
their own Holm family, and gate only with ``--fail-on phases``. loadprof's own phases (trace, membw, estimate,
cleanup) are in ``harness`` and never gate.
"""

from __future__ import annotations

import difflib
import statistics
from dataclasses import replace
from typing import Callable, Iterable, Mapping, Sequence

from loadprof.analysis import stats
from loadprof.analysis.derive import value
from loadprof.analysis.findings import LOADPROF_PHASES
from loadprof.core import figures
from loadprof.core.diffs import DiffResult, DiffRow, DiffSide, MatchedPair, Unmatched
from loadprof.core.errors import SpecError
from loadprof.results.model import SweepResult, TrialResult

# ---------------------------------------------------------------- exit codes (the one place they are named)

EXIT_OK = 0                  #: no gated regression
EXIT_REGRESSION = 1          #: at least one gated figure got worse beyond noise and the floors
EXIT_BAD_INPUT = 2           #: a report is missing or unreadable, or an option is bad
EXIT_UNDECIDED = 3           #: a gated figure had fewer than MIN_REPEATS ok repeats on a side (1 wins over 3)
EXIT_NOTHING_COMPARABLE = 4  #: no strategy matched between the two sweeps (or none had a figure on both sides)
EXIT_CODES: dict[int, str] = {
    EXIT_OK: "no gated regression",
    EXIT_REGRESSION: "at least one gated regression beyond noise and the floors",
    EXIT_BAD_INPUT: "a report is missing or unreadable, or a bad option",
    EXIT_UNDECIDED: f"insufficient data: a gated figure had fewer than {stats.MIN_REPEATS} ok repeats on a side "
                    "(a decided regression still exits 1)",
    EXIT_NOTHING_COMPARABLE: "nothing comparable: no strategy matched between the two sweeps",
}
RERUN_HINT = f"not distinguishable without repeats: rerun both sweeps with `repeat: {stats.MIN_REPEATS}`"

# ---------------------------------------------------------------- figures and their groups

#: phases whose children are compared one by one (plus their uncovered remainder as ``<phase>/other``)
DETAILED = ("load", "generate", "warmup")
MIB = 2**20
#: the groups ``--fail-on`` selects; ``harness`` is loadprof's own work and never gates
GROUPS = ("load", "ttft", "prefill", "decode", "memory", "phases", "status")
#: what gates without --fail-on: the headline figures (phases explain a change; gating each would multiply
#: the comparisons a noisy machine can fail on)
DEFAULT_FAIL_ON = ("load", "ttft", "prefill", "decode", "memory", "status")
HARNESS = "harness"
#: row verdicts
REGRESSION, IMPROVEMENT, SAME, UNDECIDED = "regression", "improvement", "same", "undecided"


#: the catalogue's figures compared besides the phases (``Figure.gate``: the group each gates in), in group order
COMPARED: tuple[figures.Figure, ...] = tuple(sorted((f for f in figures.CATALOGUE if f.gate),
                                            key=lambda f: GROUPS.index(f.gate or "")))
#: a figure's absolute floor by its unit, from ``min_abs_s``: a rate has none, bytes 1 MiB
FLOORS: Mapping[str, Callable[[float], float]] = {"s": lambda s: s, "ms": lambda s: s * 1e3,
                                                  "tok/s": lambda s: 0.0, "bytes": lambda s: MIB}


def phase_group(path: str) -> str:
    """The ``--fail-on`` group of a phase path: loadprof's own are ``harness`` (never gated), every workload
    phase is ``phases`` (the real load cost's phases gate through ``figures.LOAD_COST_S``, group ``load``)."""
    return HARNESS if path.split("/", 1)[0] in LOADPROF_PHASES else "phases"


def parse_fail_on(text: str | None) -> tuple[str, ...]:
    """``--fail-on`` as a tuple of groups (None or empty: DEFAULT_FAIL_ON; ``all``: every group); an unknown name
    is bad input naming the nearest."""
    if not text or not text.strip():
        return DEFAULT_FAIL_ON
    if text.strip() == "all":
        return GROUPS
    names = [n.strip() for n in text.split(",") if n.strip()]
    for n in names:
        if n not in GROUPS:
            near = difflib.get_close_matches(n, GROUPS, n=1, cutoff=0.0)
            raise SpecError(f"unknown group {n!r}" + (f"; did you mean {near[0]!r}?" if near else "")
                            + f" (valid: {', '.join(GROUPS)})", path="--fail-on")
    return tuple(g for g in GROUPS if g in names)


# ---------------------------------------------------------------- per-trial values

def phase_values(t: TrialResult) -> dict[str, float]:
    """Durations by path; phases of the same name at one level (two generate calls, two resolves) are summed."""
    out: dict[str, float] = {}
    for p in t.phases:
        out[p.name] = out.get(p.name, 0.0) + p.duration_s
        if p.name in DETAILED and p.children:
            for c in p.children:
                key = f"{p.name}/{c.name}"
                out[key] = out.get(key, 0.0) + c.duration_s
            out[f"{p.name}/other"] = out.get(f"{p.name}/other", 0.0) + p.other_s
    return out


def judge(a: Sequence[float], b: Sequence[float], lower_is_better: bool, threshold_pct: float, min_abs: float, *,
          kind: str, name: str, group: str, unit: str) -> DiffRow:
    """Medians, the difference with its CI, and the verdict for one figure measured on both sides."""
    c = stats.compare_repeats(a, b)
    if c is None:
        raise ValueError("judge needs a number on both sides")
    limit = max(threshold_pct / 100.0 * abs(c.a.median), min_abs)
    beyond = abs(c.diff) > limit
    p = stats.t_test_p(a, b)
    verdict = UNDECIDED if p is None else SAME  # decided in ``decide``, over the whole family of comparisons
    return DiffRow(kind, name, group, unit, c.a.median, c.b.median, verdict, len(a), len(b), change=c.diff,
                   change_pct=100.0 * c.rel_diff if c.rel_diff is not None else None, lo=c.lo, hi=c.hi,
                   noise=c.noise, limit=limit, beyond_floor=beyond, distinguishable=c.distinguishable,
                   lower_is_better=lower_is_better, judged=True, p=p)


# ---------------------------------------------------------------- matching strategies

def _by_strategy(trials: Iterable[TrialResult]) -> dict[str, list[TrialResult]]:
    out: dict[str, list[TrialResult]] = {}
    for t in trials:
        out.setdefault(t.strategy_id, []).append(t)
    return out


def _label(ts: Sequence[TrialResult]) -> str:
    return ts[0].label or ts[0].strategy_id


def match(a: SweepResult, b: SweepResult) -> tuple[list[tuple[str, str, str]], list[Unmatched]]:
    """Pairs (id_a, id_b, how) by strategy id, then by label when the label is unique on both sides; the rest."""
    ga, gb = _by_strategy(a.trials), _by_strategy(b.trials)
    pairs = [(sid, sid, "id") for sid in ga if sid in gb]
    rest_a = [sid for sid in ga if sid not in gb]
    rest_b = [sid for sid in gb if sid not in ga]
    la: dict[str, list[str]] = {}
    lb: dict[str, list[str]] = {}
    for sid in rest_a:
        la.setdefault(_label(ga[sid]), []).append(sid)
    for sid in rest_b:
        lb.setdefault(_label(gb[sid]), []).append(sid)
    for label, ids in la.items():
        if len(ids) == 1 and len(lb.get(label, ())) == 1:
            pairs.append((ids[0], lb[label][0], "label"))
    paired_a, paired_b = {p[0] for p in pairs}, {p[1] for p in pairs}
    unmatched = [Unmatched(side, _label(g[sid]), sid, tuple(t.trial_id for t in g[sid]))
                 for side, g, rest, paired in (("a", ga, rest_a, paired_a), ("b", gb, rest_b, paired_b))
                 for sid in rest if sid not in paired]
    return pairs, unmatched


# ---------------------------------------------------------------- rows of one matched strategy

def _status_row(ta: Sequence[TrialResult], tb: Sequence[TrialResult], ok_a: bool) -> DiffRow:
    """A strategy that was ok and now fails (or the reverse): decided without repeats."""
    status = ("ok" if ok_a else ta[0].status, "ok" if not ok_a else tb[0].status)
    return DiffRow("status", "status", "status", "", status[0], status[1], REGRESSION if ok_a else IMPROVEMENT,
                   sum(t.ok for t in ta), sum(t.ok for t in tb), beyond_floor=True, distinguishable=True)


def _phase_rows(oka: Sequence[TrialResult], okb: Sequence[TrialResult], threshold_pct: float,
                min_abs_s: float) -> list[DiffRow]:
    pa, pb = [phase_values(t) for t in oka], [phase_values(t) for t in okb]
    rows = []
    for path in dict.fromkeys([k for d in pa for k in d] + [k for d in pb for k in d]):
        xa, xb = [d[path] for d in pa if path in d], [d[path] for d in pb if path in d]
        group = phase_group(path)
        if xa and xb:
            rows.append(judge(xa, xb, True, threshold_pct, min_abs_s, kind="phase", name=path, group=group, unit="s"))
        else:  # a phase on one side only (a step added or removed): shown, never a regression
            v = statistics.median(xa or xb)
            rows.append(DiffRow("phase", path, group, "s", v if xa else None, v if xb else None,
                                "only in A" if xa else "only in B", len(xa), len(xb)))
    return rows


def _figure_rows(oka: Sequence[TrialResult], okb: Sequence[TrialResult], threshold_pct: float,
                 min_abs_s: float) -> list[DiffRow]:
    rows = []
    for f in COMPARED:
        xa = [v for t in oka if (v := value(t, f)) is not None]
        xb = [v for t in okb if (v := value(t, f)) is not None]
        if xa and xb:
            rows.append(judge(xa, xb, f.lower_is_better, threshold_pct, FLOORS[f.unit](min_abs_s), kind="metric",
                              name=f.key, group=f.gate or "", unit=f.unit))
    return rows


def rows_for(ta: Sequence[TrialResult], tb: Sequence[TrialResult], threshold_pct: float,
             min_abs_s: float) -> list[DiffRow]:
    """Every compared figure of one matched strategy: a status change, or the real load cost, the metrics and
    every phase over the ok repeats of each side."""
    oka, okb = [t for t in ta if t.ok], [t for t in tb if t.ok]
    if not oka or not okb:
        return [] if not oka and not okb else [_status_row(ta, tb, bool(oka))]
    return _figure_rows(oka, okb, threshold_pct, min_abs_s) + _phase_rows(oka, okb, threshold_pct, min_abs_s)


# ---------------------------------------------------------------- the diff

def _severity(row: DiffRow) -> float:
    """How far past its floor a change went (for ordering: worst first; status changes first of all)."""
    if row.limit and row.change is not None:
        return abs(row.change) / row.limit
    return float("inf")


def _worst_first(rows: Iterable[DiffRow]) -> tuple[DiffRow, ...]:
    return tuple(sorted(rows, key=lambda r: (not r.gated, -_severity(r))))


def decide(rows: Sequence[DiffRow]) -> list[DiffRow]:
    """Each decidable row with its verdict: Holm over the gated rows as one family and over the rest as another
    (shown, never gating); a rejected comparison beyond its floor is a regression or an improvement."""
    verdicts: dict[int, str] = {}
    for family in ([i for i, r in enumerate(rows) if r.gated and r.p is not None],
                   [i for i, r in enumerate(rows) if not r.gated and r.p is not None]):
        for i, reject in zip(family, stats.holm([rows[i].p or 0.0 for i in family])):
            r = rows[i]
            worse = (r.change or 0.0) * (1 if r.lower_is_better else -1)
            verdicts[i] = (REGRESSION if worse > 0 else IMPROVEMENT) if reject and r.beyond_floor else SAME
    return [replace(r, verdict=verdicts[i]) if i in verdicts else r for i, r in enumerate(rows)]


def _explained(reg: DiffRow, rows: Sequence[DiffRow]) -> str:
    """A gated regression with the phases of the same strategy that moved with it (what to look at)."""
    moved = [r.name for r in rows if r.kind == "phase" and r.strategy == reg.strategy
             and r.verdict == REGRESSION and "/" not in r.name]
    return f"{reg.strategy}: {reg.name}" + (f" (phases: {', '.join(moved)})" if moved else "")


def exit_code(rows: Sequence[DiffRow], matched: Sequence[MatchedPair]) -> tuple[int, str]:
    """The gate's verdict: a decided gated regression (1) wins over undecided gated figures (3)."""
    if not matched:
        return EXIT_NOTHING_COMPARABLE, EXIT_CODES[EXIT_NOTHING_COMPARABLE]
    if not rows:
        return EXIT_NOTHING_COMPARABLE, "nothing comparable: the matched strategies failed on both sides"
    regs = [r for r in rows if r.gated and r.verdict == REGRESSION]
    if regs:
        names = ", ".join(dict.fromkeys(_explained(r, rows) for r in _worst_first(regs)))
        return EXIT_REGRESSION, f"{len(regs)} gated regression(s): {names}"
    undecided = [r for r in rows if r.gated and r.verdict == UNDECIDED]
    if undecided:
        return EXIT_UNDECIDED, f"{len(undecided)} gated figure(s) undecided: {RERUN_HINT}"
    return EXIT_OK, EXIT_CODES[EXIT_OK]


def concurrency_note(a: SweepResult, b: SweepResult) -> str | None:
    """The line a diff shows when the two sides ran different numbers of trials at once (``--jobs``, Ray):
    timings taken beside other trials differ from ones taken alone for that reason alone. Never gates."""
    na, nb = (max((t.concurrency for t in s.trials), default=1) for s in (a, b))
    if na == nb:
        return None
    at = lambda n: "one at a time" if n == 1 else f"{n} at a time"  # noqa: E731
    return (f"A ran its trials {at(na)}, B {at(nb)}: timings taken beside other trials are not comparable with "
            "ones taken alone; a difference may come from that alone")


def diff(a: SweepResult, b: SweepResult, threshold_pct: float = 10.0, min_abs_s: float = 0.005,
         fail_on: Sequence[str] = DEFAULT_FAIL_ON) -> DiffResult:
    """Every figure of every strategy in both runs, with its comparison, verdict and whether it gates, and the
    gate's exit code (``DiffResult``; its ``to_dict`` is the JSON ``loadprof diff --format json`` prints).
    ``notes``: what makes the comparison less fair without gating it (``concurrency_note``)."""
    pairs, unmatched = match(a, b)
    ga, gb = _by_strategy(a.trials), _by_strategy(b.trials)
    rows: list[DiffRow] = []
    matched: list[MatchedPair] = []
    for ida, idb, how in pairs:
        label = _label(gb[idb])
        matched.append(MatchedPair(label, ida, idb, how))
        rows += [replace(r, strategy=label, strategy_id_a=ida, strategy_id_b=idb, match=how,
                         gated=r.group != HARNESS and r.group in fail_on)
                 for r in rows_for(ga[ida], gb[idb], threshold_pct, min_abs_s)]
    rows = decide(rows)
    code, reason = exit_code(rows, matched)
    pick = lambda v: _worst_first(r for r in rows if r.verdict == v)  # noqa: E731
    side = lambda s, g: DiffSide(s.run_id, s.name, tuple(sorted({_label(ts) for ts in g.values()})))  # noqa: E731
    return DiffResult(side(a, ga), side(b, gb), threshold_pct, min_abs_s, tuple(fail_on),
                      f"{stats.GATE_METHOD}; ± is the bootstrap 95% CI of the difference of medians",
                      tuple(matched), tuple(rows), regressions=pick(REGRESSION), improvements=pick(IMPROVEMENT),
                      undecided=pick(UNDECIDED), same=sum(r.verdict == SAME for r in rows),
                      unmatched=tuple(unmatched), exit_code=code, exit_reason=reason,
                      notes=tuple(n for n in (concurrency_note(a, b),) if n))
