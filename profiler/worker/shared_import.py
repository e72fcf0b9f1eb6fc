"""The lazy import a built-in load starts with, done once for the trials that share it (loadprof.worker.forkserver's
sub-zygotes): ``import_for_load`` imports what the first ``from_pretrained`` of a model imports lazily, the way it
imports it, and times each outermost import exactly as the imports probe times a trial's own.
"""

from __future__ import annotations

import contextlib
import os
import resource
import select
import signal
from typing import Any

from loadprof.core.clock import DEFAULT_CLOCK as CLOCK


def import_for_load(model_path: str) -> dict[str, Any]:
    """In a sub-zygote: what a built-in load imports first, imported the way ``from_pretrained`` does it (the
    config's model class through transformers' auto mapping), each outermost import timed on the one clock as the
    imports probe times a trial's. The record goes into each forked trial's spec."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from loadprof.probes import _imports
    from loadprof.probes.machine import read_stat

    stat0, own0 = read_stat(), _own_cpu_s()
    timer = _imports.ImportTimer(lambda name: contextlib.nullcontext(name), CLOCK.now_ns,
                                 ignore_modules=("loadprof",))
    stop = _imports.start_timer(timer)
    t0 = CLOCK.now_ns()
    timer.active = True
    try:
        config = AutoConfig.from_pretrained(model_path)
        AutoModelForCausalLM._model_mapping[type(config)]  # noqa: B018 - the lookup is the lazy import
    finally:
        t1 = CLOCK.now_ns()
        stop()
    stat1, own1 = read_stat(), _own_cpu_s()
    wall = (t1 - t0) / 1e9
    others = None  # other processes' CPU use while it imported: a trial's machine record starts after this
    if stat0 is not None and stat1 is not None and wall > 0:
        busy_s = (stat1.busy - stat0.busy) / os.sysconf("SC_CLK_TCK")
        others = max(0.0, busy_s - (own1 - own0)) / wall
    return {"seconds": timer.total_ns / 1e9, "wall_s": wall, "count": timer.count, "pid": os.getpid(),
            "t_start_ns": t0, "t_end_ns": t1, "others_cpu_cores": others,
            "imports": [{"module": r.module, "seconds": r.seconds} for r in timer.records]}


def _own_cpu_s() -> float:
    me = resource.getrusage(resource.RUSAGE_SELF)
    return me.ru_utime + me.ru_stime


def wait_or_kill(pid: int, timeout_s: float = 5.0) -> None:
    """Reap a retired sub-zygote, SIGKILL if it takes longer than ``timeout_s`` (its trials die with it)."""
    deadline = CLOCK.now_ns() + int(timeout_s * 1e9)
    while True:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return
        if done:
            return
        if CLOCK.now_ns() > deadline:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
            return
        select.select([], [], [], 0.02)


