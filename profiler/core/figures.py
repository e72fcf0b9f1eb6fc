"""The catalogue of figures: every per-trial number that decisions, diff, Pareto fronts, verdicts, the report
tables, the CSV files and the CLI's choices name, defined once.

A ``Figure`` is a key of a trial's ``metrics`` (its unit in its name) with its unit, which direction is better,
the label tables print, the objective it answers and how it is read. Code names a figure by its constant
(``figures.DECODE_TOK_S.key``, ``figures.TTFT_MS.read(metrics)``), never by spelling its key:
tests/test_figures.py fails on a key spelled anywhere else in the package, so a figure cannot drift between two
copies of a table. The objectives (``OBJECTIVES``) are those the catalogue's figures answer, in catalogue order.

Derived figures (``derived``) are computed from a trial's phases by loadprof.analysis.derive (``derive.value``
reads any figure of a trial, today's derivation first, so a report.json written before a figure existed still
has it); the others are read from ``metrics`` as the worker and the runner filed them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping


@dataclass(frozen=True)
class Objective:
    """What a recommendation optimises (``name``, the CLI's ``--objective``); ``best`` names its pick in the
    verdict block ("fastest load") and ``label`` its figure in tables ("peak memory", whichever peak it is)."""

    name: str
    best: str
    label: str


LOAD = Objective("load", "fastest load", "load cost")
MEMORY = Objective("memory", "least memory", "peak memory")
TTFT = Objective("ttft", "fastest first token", "TTFT")
THROUGHPUT = Objective("throughput", "fastest decode", "decode (tg)")


@dataclass(frozen=True)
class Figure:
    """One figure: ``key`` in a trial's metrics and report.json, ``unit`` (``s``, ``ms``, ``bytes``, ``tok/s``),
    direction (``lower_is_better``), ``label`` (table heading) and the ``objective`` it answers, if any.

    ``derived``: computed by loadprof.analysis.derive from the trial's phases (read it with ``derive.value``).
    ``gate``: the ``loadprof diff --fail-on`` group it is compared and gated in (None: not compared on its own).
    ``exact``: an exact count that repeats to the byte for one program (the CUDA allocator's), so one repeat
    decides a comparison. ``per_configuration``: summarised over each configuration's repeats
    (loadprof.analysis.aggregate, report.json ``configurations``, configurations.csv)."""

    key: str
    unit: str
    lower_is_better: bool
    label: str
    objective: Objective | None = None
    derived: bool = False
    gate: str | None = None
    exact: bool = False
    per_configuration: bool = True

    def read(self, metrics: Mapping[str, Any]) -> Any:
        """The figure as ``metrics`` (a trial's, or a configuration's figures) holds it, or None."""
        return metrics.get(self.key)


LOAD_COST_S = Figure("load_cost_s", "s", True, "load cost", LOAD, derived=True, gate="load")
PEAK_RSS_BYTES = Figure("peak_rss_bytes", "bytes", True, "peak RSS", MEMORY, gate="memory")
PEAK_CUDA_ALLOCATED_BYTES = Figure("peak_cuda_allocated_bytes", "bytes", True, "peak CUDA", MEMORY, gate="memory",
                                   exact=True)
TTFT_MS = Figure("ttft_ms", "ms", True, "TTFT", TTFT, gate="ttft")
PREFILL_TOK_S = Figure("prefill_tok_s", "tok/s", False, "prefill (pp)", derived=True, gate="prefill")
DECODE_TOK_S = Figure("decode_tok_s", "tok/s", False, "decode (tg)", THROUGHPUT, gate="decode")
DECODE_TOK_S_PER_SEQ = Figure("decode_tok_s_per_seq", "tok/s", False, "decode per sequence",
                              per_configuration=False)
GENERATE_CALL_S = Figure("generate_call_s", "s", True, "generate call")
LOAD_S = Figure("load_s", "s", True, "load")
IMPORT_S = Figure("import_s", "s", True, "import")
#: the lazy import a trial's load shares with the other trials of its repeat round, measured once in the forkserver's
#: sub-zygote (loadprof.worker.shared_import) and part of each one's real load cost
SHARED_IMPORT_S = Figure("shared_import_s", "s", True, "shared import", per_configuration=False)
#: the load against the machine: bytes the load read / real load cost, and that rate's share of the read bound
#: (storage sequential read on a cold load, page-cache read on a warm one); loadprof.analysis.derive.load_bounds
LOAD_GB_S = Figure("load_gb_s", "GB/s", False, "load GB/s", derived=True)
LOAD_BOUND_FRACTION = Figure("load_bound_fraction", "fraction", False, "of read bound", derived=True)

#: every figure, in the order tables show them
CATALOGUE: tuple[Figure, ...] = (LOAD_COST_S, PEAK_RSS_BYTES, PEAK_CUDA_ALLOCATED_BYTES, TTFT_MS, PREFILL_TOK_S,
                                 DECODE_TOK_S, DECODE_TOK_S_PER_SEQ, GENERATE_CALL_S, LOAD_S, IMPORT_S,
                                 SHARED_IMPORT_S, LOAD_GB_S, LOAD_BOUND_FRACTION)
BY_KEY: Mapping[str, Figure] = {f.key: f for f in CATALOGUE}
#: the objectives the catalogue's figures answer, in catalogue order
OBJECTIVES: tuple[Objective, ...] = tuple(dict.fromkeys(f.objective for f in CATALOGUE if f.objective))
OBJECTIVE_NAMES: tuple[str, ...] = tuple(o.name for o in OBJECTIVES)
_BY_NAME: Mapping[str, Objective] = {o.name: o for o in OBJECTIVES}
#: the figures each configuration is summarised by, in column order
PER_CONFIGURATION: tuple[Figure, ...] = tuple(f for f in CATALOGUE if f.per_configuration)


def by_key(key: str) -> Figure:
    """The catalogue's figure of that key (KeyError for a key that is not a figure)."""
    return BY_KEY[key]


def objective(name: str) -> Objective:
    """The objective of that name (KeyError for an unknown one)."""
    return _BY_NAME[name]


def memory_figure(measured: Iterable[Mapping[str, Any]]) -> Figure:
    """The one rule for the memory figure: the CUDA allocator peak when every one of ``measured`` (trials'
    metrics, or configurations' figures) has one, else the RSS peak, which every trial has.

    The GPU's is the scarce memory, but only a figure every compared item measured ranks them on equal terms: a
    trial that never touched CUDA (``device_map: cpu``) has no allocator peak, and comparing its RSS with
    another's allocator bytes would compare two different memories."""
    items = list(measured)
    every = bool(items) and all(PEAK_CUDA_ALLOCATED_BYTES.read(m) is not None for m in items)
    return PEAK_CUDA_ALLOCATED_BYTES if every else PEAK_RSS_BYTES


def objective_figure(name: str, memory: Figure = PEAK_RSS_BYTES) -> Figure:
    """The figure objective ``name`` ranks by; the memory objective's is ``memory`` (from ``memory_figure``)."""
    if name == MEMORY.name:
        return memory
    return next(f for f in CATALOGUE if f.objective is objective(name))
