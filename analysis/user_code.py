"""Findings about the user's own code: a function that holds the load (running or waiting), code that runs in
every decode step, and calls that added memory, each broken down by the calls it made outside the user's files
(``UserFunction.callees``, from loadprof.probes.callees): when one call holds most of the function's time the
title names that call and the user's line that makes it, and ``CALLS`` adds a fix for the well-known expensive
ones; the breakdown names any call without it.

Kept apart from loadprof.analysis.findings, which lists its rules, for the same reason as the precision rules.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from loadprof.core.payloads import MemoryPayload, SamplingPayload
from loadprof.core.payloads.sampling import Callee, UserFunction
from loadprof.core.units import bytes_h, pct
from loadprof.results.model import Finding, TrialResult

#: a user function's share of the load from which it is a finding (low), medium and high; the load includes the
#: lazy modeling import, which is most of a small model's load, so a tenth is already a culprit worth naming
USER_FN_SHARE_MIN, USER_FN_SHARE_MEDIUM, USER_FN_SHARE_HIGH = 0.10, 0.20, 0.50
USER_FN_MIN_S = 0.2  # below this a user function's share rests on a handful of samples
GEN_USER_SHARE_MEDIUM, GEN_USER_SHARE_HIGH, GEN_USER_MIN_S = 0.10, 0.50, 0.02
#: one call over this share of the function's time is named in the title
CALL_NAMED_SHARE = 0.5
#: calls shown in a finding's breakdown
SHOWN = 4
#: memory a user call added that is a finding: over this share of the weights, and at least MEMORY_MIN_BYTES
MEMORY_SHARE, MEMORY_MIN_BYTES = 0.25, 8 * 2**20
OWN = "(own code)"
#: calls whose memory is the model itself, never a culprit of memory
MODEL_BUILDERS = ("from_pretrained", "from_config")
#: well-known expensive calls, by the end of their public name: (what it is, the fix)
RANDOM_INIT = ("random weight init", "load with from_pretrained (it skips the random init), or build the model on "
               "the meta device (`with torch.device('meta'):`) and load_state_dict(..., assign=True)")
CALLS: tuple[tuple[str, tuple[str, str]], ...] = (
    ("from_config", RANDOM_INIT), ("_from_config", RANDOM_INIT),
    ("Tensor.clone", ("a copy of the weights", "drop the copy: it is not needed to use or reload the model (re-read "
                                                "the checkpoint if you need pristine weights)")),
    ("copy.deepcopy", ("a deep copy of the model", "share the model instead of copying it; load a second instance "
                                                   "only if it must diverge")),
    ("shutil.copytree", ("a copy of the checkpoint folder", "load the checkpoint in place (from its own folder)")),
    ("shutil.copy", ("a copy of a checkpoint file", "load the file in place")),
    ("shutil.copy2", ("a copy of a checkpoint file", "load the file in place")),
    ("gc.collect", ("a full garbage collection", "collect once after the load (or not at all), not per module or "
                                                 "per step")),
    ("time.sleep", ("a sleep", "remove the sleep, or wait on the event itself instead of polling")),
    ("subprocess.run", ("a subprocess", "run the check once at start-up and cache its answer, outside the load")),
    ("Popen.communicate", ("a subprocess", "run the check once at start-up and cache its answer, outside the load")),
    ("socket.recv", ("a network wait", "send it from a background thread with a short timeout, never in the load")),
    ("socket.connect", ("a network wait", "send it from a background thread with a short timeout")),
    ("socket.create_connection", ("a network wait", "send it from a background thread with a short timeout")),
    ("Module.load_state_dict", ("copying a state dict into the model", "let from_pretrained load the weights, or "
                                "load_state_dict(..., assign=True) onto a meta-device model")),
)

_f = TrialResult.finding


def known(name: str) -> tuple[str, str] | None:
    """(what it is, fix) for a well-known expensive call, by the end of its public name."""
    return next((v for k, v in CALLS if name == k or name.endswith("." + k)), None)


def _sampling(t: TrialResult) -> SamplingPayload:
    return t.payload(SamplingPayload) or SamplingPayload(ok=False)


def _wall(t: TrialResult, name: str) -> float:
    return sum(p.duration_s for p in t.phases if p.name == name)


def _basis(t: TrialResult, n: int) -> str:
    sv = _sampling(t)
    rate = f", {sv.effective_rate_hz:.0f} Hz effective" if sv.effective_rate_hz else ""
    return (f"{n} samples{rate}; seconds are wall time, each sample weighted by the gap since the previous reading; "
            "the stake leaves out the time the thread sat runnable while another process held the CPU")


def busy_part(u: UserFunction, seconds: float) -> float:
    """Of ``seconds`` of ``u``'s time, the part it sat runnable while another process held the CPU (its share of
    the function's time, from the run-queue delay): time a quiet machine would not have spent."""
    return seconds * min(1.0, (u.cpu_wait_s or 0.0) / u.seconds) if u.seconds else 0.0


def _cpu_text(u: UserFunction, seconds: float) -> str:
    busy = busy_part(u, seconds)
    return f", {busy:.2f} s waiting for a CPU another process held" if busy >= 0.01 else ""


def _where(u: UserFunction, line: int | None) -> str:
    return f"{Path(u.file).name}:{line}"


def calls_of(u: UserFunction, part: str) -> list[tuple[Callee, float]]:
    """The function's calls with their seconds in ``part`` ('own_s', 'decode_s' or 'seconds'), most first."""
    rows = [(c, float(getattr(c, part))) for c in u.callees or ()]
    return sorted(((c, s) for c, s in rows if s > 0), key=lambda cs: -cs[1])


def breakdown_text(u: UserFunction, calls: Sequence[tuple[Callee, float]], total: float) -> str:
    """"`copy.deepcopy` (loader.py:20) 1.20 s (60%, waiting: disk 0.3 s)" for the calls holding the time."""
    out = []
    for c, s in calls[:SHOWN]:
        waits = ", ".join(f"{k} {v:.2f} s" for k, v in (c.waits or {}).items() if v >= 0.01)
        what = known(c.name)
        out.append(f"`{c.name}`" + (f" ({what[0]})" if what else "") + f" ({_where(u, c.line)}) {s:.2f} s "
                   f"({pct(s / total) if total else '-'}" + (f"; waiting: {waits}" if waits else "") + ")")
    return "; ".join(out)


def _lead(calls: Sequence[tuple[Callee, float]], total: float) -> Callee | None:
    """The call that holds most of the time, when one does (the function's own lines are not a call)."""
    if not calls or total <= 0:
        return None
    c, s = calls[0]
    return c if s / total > CALL_NAMED_SHARE and c.name != OWN else None


def _call_title(u: UserFunction, c: Callee, seconds: float, wall: float, of: str) -> str:
    what = known(c.name)
    return (f"`{u.name}`: {pct(seconds / wall)} of {of} is `{c.name}`" + (f" {what[0]}" if what else "")
            + f" ({_where(u, c.line)}, {seconds:.2f} s)")


def dominant_user_function(t: TrialResult) -> Iterable[Finding]:
    """The user's own function that holds the load, running (a validation walk, a copy) or waiting (a lock file,
    a subprocess, a socket), and the call inside it that holds the time. Shares are of the load's wall time."""
    users = _sampling(t).user_functions_in("load")
    wall = _wall(t, "load")
    if not users or not wall:
        return
    top = users[0]
    share = top.own_s / wall
    if share < USER_FN_SHARE_MIN or top.own_s < USER_FN_MIN_S:
        return
    calls = calls_of(top, "own_s")
    lead = _lead(calls, top.own_s)
    where = f"{top.file}:{top.line}" + (f", hottest line {top.hottest_line}" if top.hottest_line else "")
    waited = top.waiting_s or 0.0  # None: thread states not read (older files), so no wait is claimed
    waiting = waited * (top.own_s / top.seconds) if top.seconds else 0.0
    own_quiet = top.own_s - busy_part(top, top.own_s)  # its own time less what a neighbour's CPU use added
    severity = "high" if share >= USER_FN_SHARE_HIGH else "medium" if share >= USER_FN_SHARE_MEDIUM else "low"
    split = (f"{top.running_s:.2f} s running, {waited:.2f} s waiting"
             + (f" ({', '.join(f'{k} {v:.2f} s' for k, v in top.waits.items())})" if top.waits else "")
             + _cpu_text(top, top.seconds))
    inside = f" Inside it: {breakdown_text(top, calls, top.own_s)}." if calls else ""
    is_wait = waiting >= own_quiet / 2
    fix = (known(lead.name)[1] if lead is not None and known(lead.name) else
           f"your loader waits ({top.main_wait}): remove the wait, or do it before timing-critical work (it is time "
           "to load that no setting of from_pretrained can win back)" if is_wait else
           "this is time in your loader, not in transformers: remove or sample that work")
    call_s = next((s for c, s in calls if c is lead), 0.0)
    call_ev = dict(call=lead.name, call_line=lead.line, call_s=call_s, call_share=call_s / wall) if lead else {}
    common = dict(basis=_basis(t, top.samples), function=top.name, file=top.file, line=top.line, load_wall_s=wall,
                  calls=[{"name": c.name, "line": c.line, "seconds": s} for c, s in calls[:SHOWN]], **call_ev)
    if is_wait:
        title = (_call_title(top, lead, call_ev["call_s"], wall, "the load") + f", waiting ({top.main_wait})"
                 if lead else f"your function {top.name} waits {waiting:.2f} s ({top.main_wait}): "
                              f"{pct(waiting / wall)} of the load")
        yield _f(t, "user_wait", severity, title,
                 f"{top.name} ({where}) spent {top.own_s:.2f} s of the {wall:.2f} s load phase outside "
                 f"transformers' loading steps: {split}.{inside}", fix, mistake=True, stake_s=waiting,
                 waiting_s=waiting, wait=top.main_wait, share=waiting / wall, **common)
        return
    title = (_call_title(top, lead, call_ev["call_s"], wall, "the load") if lead else
             f"your function {top.name} is {pct(share)} of the load ({top.own_s:.2f} s)")
    yield _f(t, "dominant_user_function", severity, title,
             f"{top.name} ({where}) took {top.own_s:.2f} s of the {wall:.2f} s load phase outside transformers' own "
             f"loading steps: {split}.{inside}", fix, mistake=True, stake_s=own_quiet, share=share, own_s=top.own_s,
             **common)


def generate_user_code(t: TrialResult) -> Iterable[Finding]:
    """The user's code running inside generate's decode steps: a logits processor, a stopping criterion, a
    streamer's sink, a wrapped forward, and the call inside it that holds the time. Its share is of the decode
    steps' wall time."""
    for u in _sampling(t).user_functions_in("generate"):
        share = u.share_of_decode
        if share is None or u.decode_s is None or share < GEN_USER_SHARE_MEDIUM or u.decode_s < GEN_USER_MIN_S:
            continue
        calls = calls_of(u, "decode_s")
        lead = _lead(calls, u.decode_s)
        title = (f"your code {u.name} takes {pct(share)} of decode ({u.decode_s:.2f} s)"
                 + (f": `{lead.name}` ({_where(u, lead.line)})" if lead else ""))
        inside = f" Inside it: {breakdown_text(u, calls, u.decode_s)}." if calls else ""
        fix = (known(lead.name)[1] + "; keep the per-token path free of it" if lead is not None and known(lead.name)
               else "make it vectorised (one tensor op per step, no Python loop over the vocabulary), move it out "
                    "of the per-token path, or drop it")
        yield _f(t, "generate_user_code", "high" if share >= GEN_USER_SHARE_HIGH else "medium", title,
                 f"{u.name} ({u.file}:{u.line}" + (f", hottest line {u.hottest_line}" if u.hottest_line else "")
                 + f") ran in every decode step: {u.decode_s:.2f} s of the measured generate calls' decode steps "
                 f"({u.running_s:.2f} s running, {u.waiting_s or 0.0:.2f} s waiting{_cpu_text(u, u.seconds)})."
                 f"{inside}", fix, mistake=True, stake_s=u.decode_s - busy_part(u, u.decode_s),
                 basis=_basis(t, u.samples), function=u.name, file=u.file, line=u.line,
                 share=share, decode_s=u.decode_s, call=lead.name if lead else None,
                 calls=[{"name": c.name, "line": c.line, "seconds": s} for c, s in calls[:SHOWN]])


#: the memory a culprit is named for: (kind, what it is, the Callee's added/held fields, the phase's start/end fields)
MEMORY_KINDS = (("anon", "anonymous memory", "added_bytes", "held_bytes", "start_anon_bytes", "end_anon_bytes"),
                ("cuda", "CUDA allocator memory", "added_cuda_bytes", "held_cuda_bytes",
                 "start_cuda_allocated_bytes", "end_cuda_allocated_bytes"))


def _weights_on(t: TrialResult, kind: str) -> int:
    """The weights the memory of ``kind`` holds: on CUDA the bytes placed on GPUs, in anon RSS the rest."""
    on_gpu = sum(int(b) for d, b in (t.metrics.get("bytes_by_device") or {}).items() if str(d).startswith("cuda"))
    return on_gpu if kind == "cuda" else max(0, (t.metrics.get("weights_bytes") or 0) - on_gpu)


def memory_culprit(t: TrialResult) -> Iterable[Finding]:
    """The user calls that added memory in a phase (anon RSS, and the CUDA allocator's bytes where CUDA ran: the
    memory timeline joined with the samples), over a quarter of the weights held there: named with their line,
    bytes added and whether the phase still held them. The model's own construction is not a culprit, and the
    bytes at stake are at most what the phase kept beyond the weights it loaded."""
    mem = t.payload(MemoryPayload)
    for kind, what, added_f, held_f, start_f, end_f in MEMORY_KINDS:
        weights = _weights_on(t, kind)
        floor = max(MEMORY_MIN_BYTES, MEMORY_SHARE * weights)
        for phase in ("load", "generate"):
            rows = [(u, c, getattr(c, added_f) or 0, getattr(c, held_f) or 0)
                    for u in _sampling(t).user_functions_in(phase) for c in u.callees or ()
                    if (getattr(c, added_f) or 0) >= floor and not any(c.name.endswith(b) for b in MODEL_BUILDERS)]
            pm = mem.per_phase.get(phase) if mem is not None else None
            start, end = (getattr(pm, start_f), getattr(pm, end_f)) if pm is not None else (None, None)
            # what the phase kept beyond the model it loaded: memory cannot say whose bytes are whose
            excess = end - start - (weights if phase == "load" else 0) if start is not None and end is not None \
                else None
            if rows and (excess is None or excess >= floor):
                yield _culprit(t, phase, kind, what, rows, excess, weights, pm)


def _culprit(t: TrialResult, phase: str, kind: str, what: str, rows: list, excess: float | None, weights: int,
             pm: Any) -> Finding:
    rows.sort(key=lambda r: (-r[3], -r[2]))
    added = sum(r[2] for r in rows)
    held = min(sum(r[3] for r in rows), excess if excess is not None else added)
    where = " on CUDA" if kind == "cuda" else ""
    peak_b = (pm.peak_cuda_allocated_bytes if kind == "cuda" else pm.peak_rss_bytes) if pm is not None else None
    peak = f"peak {bytes_h(peak_b)}" if peak_b else ""
    vs = f" vs {bytes_h(weights)} of weights" if weights else ""
    named = ", ".join(f"`{c.name}` in `{u.name}` ({_where(u, c.line)}) +{bytes_h(a)}{where} "
                      + ("still held" if h >= a / 2 else "given back") for u, c, a, h in rows[:SHOWN])
    u0, c0 = rows[0][:2]
    kinds = {c.name: k[0] for _, c, _, _ in rows[:SHOWN] if (k := known(c.name))}
    fix = "; ".join(dict.fromkeys(k[1] for _, c, _, _ in rows[:SHOWN] if (k := known(c.name)))) or \
        "keep no second copy of the weights: free what the call built, or do not build it"
    return _f(t, "memory_culprit", "high" if held >= weights > 0 else "medium",
              f"{phase}: {named}" + (f"; {peak}{vs}" if peak else ""),
              f"in {phase}, {what} grew by {bytes_h(added)} while these calls ran, and {bytes_h(held)} of it was "
              f"still {'allocated' if kind == 'cuda' else 'resident'} when the phase ended"
              + (f" ({peak}{vs})" if peak else "") + "".join(f"; `{n}` is {w}" for n, w in kinds.items()) + ".",
              fix, mistake=True, stake_bytes=held or added, subject=f"{phase}{where}",
              basis=("CUDA allocator bytes (every device)" if kind == "cuda" else "anon RSS")
              + " growth per 10 ms reading, given to the call sampled nearest it; held: what the phase never gave "
                "back after the call began (an upper bound)",
              function=u0.name, file=u0.file, line=c0.line, added_bytes=added, held_bytes=held, memory=kind,
              weights_bytes=weights or None, peak_rss_bytes=pm.peak_rss_bytes if pm is not None else None,
              calls=[{"function": u.name, "name": c.name, "line": c.line, "added_bytes": a, "held_bytes": h}
                     for u, c, a, h in rows[:SHOWN]])


RULES: tuple[Callable[[TrialResult], Iterable[Finding]], ...] = (dominant_user_function, generate_user_code,
                                                                   memory_culprit)
