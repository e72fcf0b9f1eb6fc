"""What the sweep's numbers were taken under (``loadprof.core.circumstances``): the harness's own cost per trial,
a busy machine (``analysis.busy``), trials run side by side. Computed once here, with the rest of the analysis,
so a renderer only words them and never takes a median of its own.
"""

from __future__ import annotations

import statistics
from typing import Iterable, Sequence

from loadprof.analysis.busy import busy_machine
from loadprof.analysis.derive import shared_import_record, shared_import_s
from loadprof.core import figures
from loadprof.core.circumstances import Circumstances, Concurrency, HarnessCost
from loadprof.results.model import TrialResult


def _median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def harness_cost(trials: Sequence[TrialResult]) -> HarnessCost | None:
    """Medians of what the harness cost per trial, or None when no trial recorded it. Trials forked from a
    pre-imported zygote are told apart: their import was paid once per zygote, and each zygote's is named."""
    over = [t.harness["overhead_s"] for t in trials if "overhead_s" in t.harness]
    if not over:
        return None
    forked = [t for t in trials if t.harness.get("isolation") == "forkserver"]
    fresh = [t for t in trials if t.harness.get("isolation") != "forkserver"]
    zygotes = {t.harness.get("forkserver_pid"): t.harness.get("forkserver_import_s") or 0.0 for t in forked}
    shared = [t for t in forked if shared_import_s(t)]
    subs = {shared_import_record(t).get("pid", t.trial_id): shared_import_s(t) for t in shared}  # one per round
    return HarnessCost(
        trials=len(over), overhead_s=statistics.median(over),
        startup_s=_median([t.harness["startup_s"] for t in fresh if "startup_s" in t.harness]),
        own_import_s=_median([v for t in fresh if (v := figures.IMPORT_S.read(t.metrics)) is not None]),
        forked=len(forked), fork_start_s=_median([t.harness["startup_s"] for t in forked if "startup_s" in t.harness]),
        zygote_import_s=tuple(zygotes.values()), shared=len(shared), round_imports_s=tuple(subs.values()))


def concurrency(trials: Sequence[TrialResult]) -> Concurrency | None:
    """How many trials ran beside others and at most how many at once (``--jobs``, Ray); None when every trial
    ran alone."""
    side_by_side = [t for t in trials if t.concurrency > 1]
    if not side_by_side:
        return None
    return Concurrency(len(side_by_side), len(trials), max(t.concurrency for t in side_by_side))


def circumstances(trials: Iterable[TrialResult]) -> Circumstances:
    trials = tuple(trials)
    return Circumstances(harness_cost(trials), busy_machine(trials), concurrency(trials))
