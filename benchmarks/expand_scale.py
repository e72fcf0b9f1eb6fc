"""How long ``expand`` takes for a large trial matrix: 10,000 and 40,000 trials (target: 10,000 well under 2 s).

Run on demand (not part of the tests): ``nice -n 5 python benchmarks/expand_scale.py``. Times, per size, the
expansion of a matrix YAML document (``expand``), then the trial list in run order and in report order (the ids
``--resume`` and the reports use), each the best of 3, on ``time.perf_counter``.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from loadprof.strategies.expand import expand


def matrix(trials: int) -> dict[str, Any]:
    """A sweep of ``trials`` trials: 100 x N distinct generate settings, repeat 1."""
    n = trials // 100
    return {"model": {"synthetic": {"shape": "tiny"}}, "repeat": 1,
            "matrix": {"generate": {"max_new_tokens": f"1..{n}", "prompt_tokens": "1..100"}}}


def best_of(fn: Callable[[], Any], n: int = 3) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(n):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def main() -> None:
    for size in (10_000, 40_000):
        doc = matrix(size)
        t_expand, sweep = best_of(lambda: expand(doc))
        t_trials, trials = best_of(lambda: [t.id for t in sweep.trials()])
        t_report, _ = best_of(lambda: [t.id for t in sweep.trials_by_strategy()])
        print(f"{len(trials):>6} trials: expand {t_expand:.3f} s, run order + ids {t_trials:.3f} s, "
              f"report order + ids {t_report:.3f} s, total {t_expand + t_trials + t_report:.3f} s")


if __name__ == "__main__":
    main()
