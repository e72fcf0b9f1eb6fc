"""The loading-method finding: a load far from what the machine's storage (or page cache) lets it read.

loadprof.analysis.derive holds every load against its read bound (``figures.LOAD_BOUND_FRACTION``: bytes read /
the real load cost, over the storage's sequential rate on a cold load or the page-cache read rate on a warm one,
both measured by the parent before the trial). Far below it, the time goes somewhere else than reading: the
finding names the load's data steps and their rates, so the slow one is plain (loadprof.strategies.methods).

Kept apart from loadprof.analysis.findings, which lists its rules, for the same reason as the precision rules.
"""

from __future__ import annotations

import os
from typing import Callable, Iterable

from loadprof.analysis.busy import trial_busy
from loadprof.analysis.derive import load_cost_s, load_import_s, load_read_bytes, read_bound
from loadprof.core.payloads import LoadPhasesPayload, SamplingPayload
from loadprof.core.units import bytes_h, pct, seconds
from loadprof.results.model import Finding, TrialResult

#: a load below this share of its read bound is a finding; below the second, a medium one
FAR_FROM_BOUND, FAR_FROM_BOUND_MEDIUM = 0.25, 0.10
#: below this many bytes the rate is overhead, not reading (config, imports, model construction dominate)
MIN_BOUND_BYTES = 64 * 2**20

_f = TrialResult.finding


def others_s(t: TrialResult) -> tuple[float, list[str]]:
    """Seconds of the real load cost that other findings own and that read no weights: the lazy import of code
    and the user's own code in the load (outside transformers' steps: a copy, a wait, a check), with what they
    are."""
    imp = load_import_s(t) or 0.0
    sv = t.payload(SamplingPayload)
    user = sum(u.own_s for u in sv.user_functions_in("load")) if sv is not None else 0.0
    parts = [f"its import {seconds(imp)}"] * (imp >= 0.01) + [f"your code {seconds(user)}"] * (user >= 0.01)
    return imp + user, parts


def read_elsewhere(t: TrialResult) -> str | None:
    """A folder a from_pretrained call of the trial loaded from that is not the model's (a user's loader that
    copied the checkpoint first, or points at another one): the read bound was measured on the model's files, and
    whether those others were in the page cache is not known. None where every call read the model's folder (or
    a hub id, or the calls were not recorded)."""
    model = t.harness.get("model_path")
    lp = t.payload(LoadPhasesPayload)
    if not isinstance(model, str) or lp is None:
        return None
    mine = os.path.normpath(model)
    return next((c.source for c in lp.from_pretrained_calls
                 if c.source and os.path.isabs(c.source) and os.path.normpath(c.source) != mine), None)


def load_far_from_bound(t: TrialResult) -> Iterable[Finding]:
    """The load's data window (the real load cost less its import and the user's own code, which read no weights
    and have their own findings) against the read bound: far below it, the time goes to the load's own steps. Not
    said of a load that read another folder than the model's, whose read rate is the one measured, nor of a busy
    trial (a rate against the machine's bound, with a neighbour on the machine, is not the load's alone)."""
    bound, n, cost = read_bound(t), load_read_bytes(t), load_cost_s(t)
    if bound is None or not n or not cost or n < MIN_BOUND_BYTES or read_elsewhere(t) or trial_busy(t):
        return  # on a busy trial the rate is the neighbour's as much as the load's: the busy line says so
    other, parts = others_s(t)
    window = cost - other
    if window <= 0:
        return
    rate = n / window / 1e9
    frac = rate / bound[0]
    if frac >= FAR_FROM_BOUND:
        return
    method = t.metrics.get("load_method") or t.strategy.load.method
    steps = ", ".join(f"{name} {gb:.2f} GB/s" for name, gb in (t.metrics.get("load_gb_s_by_step") or {}).items())
    at_bound = n / (bound[0] * 1e9)
    outside = f", outside {' and '.join(parts)}" if parts else ""
    yield _f(t, "load_far_from_bound", "medium" if frac < FAR_FROM_BOUND_MEDIUM else "low",
             f"the {method} load reached {pct(frac)} of the {bound[1]} rate ({rate:.2f} of {bound[0]:.2f} GB/s)"
             + outside,
             f"{bytes_h(n)} read in {window:.2f} s of a real load cost of {cost:.2f} s (load + validation + first "
             f"forward{', less ' + ' and '.join(parts) if parts else ''}); the same files read at {bound[0]:.2f} GB/s "
             f"({bound[1]}, measured before the trial) would take {at_bound:.2f} s"
             + (f". Its steps: {steps}." if steps else "."),
             "compare load.method and load.workers on this machine (strategies/examples/loading_methods_bench.yaml); "
             "a step far slower than the read (convert: a dtype cast; instantiate, assign) is the one to remove",
             stake_s=max(0.0, window - at_bound),
             basis="real load cost - its import - your code's own time in the load - bytes read / the read bound",
             fraction=frac, load_gb_s=rate, bound_gb_s=bound[0], bound=bound[1], method=method, window_s=window)


RULES: tuple[Callable[[TrialResult], Iterable[Finding]], ...] = (load_far_from_bound,)
