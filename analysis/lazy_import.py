"""The lazy-import finding: on a small model, a fresh process's first load is mostly importing code.

transformers 5 imports a model's modeling module (and with it ``transformers.modeling_utils``, generation,
integrations) inside the first ``from_pretrained``; loadprof.probes.imports times each outermost import the load
triggers as an ``import`` phase and analysis.derive sums those inside the real load cost (``load_import_s``).
Where that is most of the real load cost the weights are not what a cold start waits for, and no load setting
can win it back: only importing earlier (at service start-up) or not starting a fresh process does. So it
explains the load and puts nothing at stake of its own: importing earlier moves the cost to start-up, it does not
remove it, and a user's own mistakes of the same severity rank above it (loadprof.analysis.stake).

Kept apart from loadprof.analysis.findings, which lists its rules, for the same reason as the precision rules.
"""

from __future__ import annotations

from typing import Callable, Iterable

from loadprof.analysis.derive import load_cost_s, load_import_s, shared_import_record, shared_import_s
from loadprof.core.payloads import ImportsPayload
from loadprof.core.units import pct
from loadprof.results.model import Finding, TrialResult

#: lazy imports over this share of the real load cost are a finding; over the second, a high one
LAZY_IMPORT_SHARE, LAZY_IMPORT_SHARE_HIGH = 0.40, 0.70
#: below this many seconds the import is not worth acting on, whatever its share
LAZY_IMPORT_MIN_S = 0.1
#: modules named in the finding
SHOWN = 3

_f = TrialResult.finding


def lazy_import(t: TrialResult) -> Iterable[Finding]:
    imp, cost = load_import_s(t), load_cost_s(t)
    if not imp or not cost or imp < LAZY_IMPORT_MIN_S or imp <= LAZY_IMPORT_SHARE * cost:
        return
    share = imp / cost
    top = _slowest(t)
    named = ", ".join(f"{m} ({s:.2f} s)" for m, s in top) or "modules"
    first = f"`import {top[0][0]}`" if top else "the modeling module's import"
    shared = shared_import_s(t)
    yield _f(t, "lazy_import", "medium" if share >= LAZY_IMPORT_SHARE_HIGH else "low",
             f"{pct(share)} of the real load cost is importing code, not loading weights ({imp:.2f} s)",
             f"the load imported {named} on first use: {imp:.2f} s of the {cost:.2f} s real load cost (load + "
             "validation + first forward). A fresh process pays this once, on its first load; a later load in the "
             "same process does not, so for a small model a cold start is mostly this import.",
             f"import the modeling module at service start-up, before the first request ({first}), or keep the "
             "process warm (load once at start-up, reuse the process); compare load settings on the real load "
             "cost less the import time (load_import_s): no from_pretrained setting changes the import",
             basis="nothing at stake that a setting wins back: importing earlier moves the cost to start-up. Measured: "
                   "the `lazy_import` phases inside load, validation and the first forward (each outermost import the "
                   "load triggered, on the trial's clock)" + (f", and {shared:.2f} s of the load's first imports "
                                                              "measured once for its repeat round and shared"
                                                              if shared else ""),
             share=share, load_import_s=imp, load_cost_s=cost, shared_import_s=shared, modules=[m for m, _ in top])


def _slowest(t: TrialResult) -> list[tuple[str, float]]:
    """The slowest outermost imports of the real load cost, (module, seconds): the trial's own and those its
    repeat round's shared import did (``shared_import`` in its metrics)."""
    imports = t.payload(ImportsPayload)
    own = [(i.module, i.seconds) for i in (imports.slowest_under("load", "validate", "warmup") if imports else ())]
    shared = shared_import_record(t).get("imports")
    rows = own + [(str(i.get("module")), float(i["seconds"])) for i in (shared if isinstance(shared, list) else ())
                  if isinstance(i, dict) and isinstance(i.get("seconds"), (int, float))]
    return sorted(rows, key=lambda r: -r[1])[:SHOWN]


RULES: tuple[Callable[[TrialResult], Iterable[Finding]], ...] = (lazy_import,)
