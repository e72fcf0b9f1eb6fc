"""Which strategy knobs can move which objective: the documented table recommendations pool strategies by.

A knob that cannot affect an objective is never the reason for a pick: strategies of one model that differ only
in such knobs (and in harness settings) are one *configuration* for that objective, their repeats pooled. The
table is physics, not data; the data are checked against it afterwards (``pooling_notes``): pooled strategies
that still differ beyond the noise point at drift or a busy machine, and the report says so.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

from loadprof.strategies.model import Strategy

#: settings of the measurement, not of the configuration: never a reason for a pick
HARNESS = ("label", "timeout_s", "memory_limit", "probes", "sampling_hz", "isolation", "generate.warmup",
           "generate.repeats")


@dataclass(frozen=True)
class Irrelevant:
    """``path`` cannot change ``objective`` (when ``applies`` holds for the strategy), because ``why``."""

    path: str
    why: str
    applies: Callable[[Strategy], bool] = lambda s: True


def _dynamic_cache(s: Strategy) -> bool:
    return s.generate is None or s.generate.cache_implementation != "static"


_PAGE_CACHE_AFTER_LOAD = ("measured after the load and its first forward have read every weight, so the page "
                          "cache state no longer matters")
_NOT_GENERATING = "the load and its first forward end before any generate call"
#: objective -> knobs that cannot affect it (docs/reference/recommendations.md prints this table)
CANNOT_AFFECT: Mapping[str, tuple[Irrelevant, ...]] = {
    "load": (Irrelevant("generate.max_new_tokens", _NOT_GENERATING),
             Irrelevant("generate.cache_implementation", _NOT_GENERATING),
             Irrelevant("generate.stop_after", _NOT_GENERATING),
             Irrelevant("generate.stop_at_eos", _NOT_GENERATING)),
    "memory": (Irrelevant("load.file_cache", "page-cache pages belong to the kernel, not the process; a cold and a "
                                             "warm start map the same file pages"),),
    "ttft": (Irrelevant("load.file_cache", _PAGE_CACHE_AFTER_LOAD),
             Irrelevant("load.validation", "validation runs before the measured calls"),
             Irrelevant("generate.stop_after", "the first token comes before any stop"),
             Irrelevant("generate.stop_at_eos", "the first token comes before any stop"),
             Irrelevant("generate.max_new_tokens", "a dynamic cache allocates as tokens arrive (a static one is "
                                                   "sized by the cap before the first token)", _dynamic_cache)),
    "throughput": (Irrelevant("load.file_cache", _PAGE_CACHE_AFTER_LOAD),
                   Irrelevant("load.validation", "validation runs before the measured calls")),
}


def irrelevant_paths(objective: str, strategy: Strategy) -> tuple[str, ...]:
    return tuple(i.path for i in CANNOT_AFFECT.get(objective, ()) if i.applies(strategy))


def without(d: Mapping[str, Any], paths: Iterable[str]) -> dict[str, Any]:
    """A JSON copy of ``d`` with the dotted ``paths`` removed (what studies, trade-offs and configurations key
    strategies by: everything but the knobs in question)."""
    out = json.loads(json.dumps(d, default=str))
    for path in paths:
        *head, last = path.split(".")
        node: Any = out
        for part in head:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(last, None)
    return out


def configuration_key(strategy: Strategy, objective: str) -> str:
    """What identifies a configuration for ``objective``: the strategy less harness and irrelevant knobs."""
    return json.dumps(without(strategy.to_dict(), (*HARNESS, *irrelevant_paths(objective, strategy))),
                      sort_keys=True)


def differing(strategies: Sequence[Strategy], paths: Iterable[str]) -> list[str]:
    """The ``paths`` whose value is not the same across ``strategies`` (how pooled members differ)."""
    return [p for p in paths if len({json.dumps(s.at(p), sort_keys=True, default=str) for s in strategies}) > 1]


def reasons(objective: str, paths: Iterable[str]) -> list[str]:
    why = {i.path: i.why for i in CANNOT_AFFECT.get(objective, ())}
    return [f"{p.split('.')[-1]}: {why[p]}" for p in paths if p in why]
