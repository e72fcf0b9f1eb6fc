"""Import timing (loadprof.probes._imports, loadprof.probes.imports): each outermost import a phase of its own on
the trial's clock, nested imports inside it and never counted twice, nothing left installed once stopped; and
hooks on modules not imported yet installed when the library imports them, never imported ahead of it."""

from __future__ import annotations

import dataclasses

import importlib
import sys
import threading
import types
import uuid
from pathlib import Path

import pytest

from loadprof.core import figures

from loadprof.analysis.derive import enrich, load_import_s
from loadprof.analysis.findings import trial_findings
from loadprof.core.payloads import ImportsPayload
from loadprof.core.clock import FakeClock
from loadprof.core.phases import PhaseRecorder, build_tree
from loadprof.probes import _imports
from loadprof.probes._hooks import HookSet, active_hooks
from loadprof.probes.base import ProbeContext
from loadprof.probes.imports import ImportsProbe
from loadprof.results.model import PhaseTiming, TrialResult
from loadprof.strategies.model import ModelSpec, Strategy
from tests.helpers import strategy_of

#: seconds each test module "takes" to import: it advances the fake clock by this at its top
OWN_S = {"a": 0.25, "b": 0.5, "c": 0.125, "d": 1.0, "bad": 0.0625}


@pytest.fixture
def pkg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A fresh set of modules ``<p>_a`` (imports b, which imports c), ``<p>_d`` and ``<p>_bad`` (raises), each
    advancing a fake clock by its own time; removed from sys.modules afterwards."""
    p = f"lazy_{uuid.uuid4().hex[:8]}"
    clock = FakeClock()
    clock_mod = types.ModuleType(f"{p}_clock")
    clock_mod.CLOCK = clock  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, f"{p}_clock", clock_mod)
    nested = {"a": f"import {p}_b\n", "b": f"import {p}_c\n", "c": "", "d": "", "bad": "raise RuntimeError('no')\n"}
    for name, body in nested.items():
        (tmp_path / f"{p}_{name}.py").write_text(f"import {p}_clock\n{p}_clock.CLOCK.advance({OWN_S[name]})\n{body}"
                                                 f"VALUE = {name!r}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    yield types.SimpleNamespace(prefix=p, clock=clock, name=lambda n: f"{p}_{n}")
    for name in nested:
        sys.modules.pop(f"{p}_{name}", None)


def _recorder(clock: FakeClock) -> tuple[PhaseRecorder, list[dict]]:
    events: list[dict] = []
    return PhaseRecorder(clock, events.append, 0), events


def _phase_events(events: list[dict]) -> list[dict]:
    return [e for e in events if e.get("type") == "phase"]


def test_only_outermost_imports_are_phases_and_nested_ones_count_once(pkg):
    rec, events = _recorder(pkg.clock)
    timer = _imports.ImportTimer(rec.phase, pkg.clock.now_ns)
    stop = _imports.start_timer(timer)
    try:
        with rec.phase("load"):
            timer.active = True
            importlib.import_module(pkg.name("a"))  # a -> b -> c: one phase
            pkg.clock.advance(2.0)  # the load's own work
            importlib.import_module(pkg.name("d"))
            importlib.import_module(pkg.name("a"))  # already imported: no finder runs, no phase
            timer.active = False
    finally:
        stop()
    (load,) = build_tree(_phase_events(events))
    assert [c.name for c in load.children] == ["lazy_import", "lazy_import"]
    first, second = load.children
    assert first.duration_s == OWN_S["a"] + OWN_S["b"] + OWN_S["c"] and second.duration_s == OWN_S["d"]
    assert sum(c.duration_s for c in load.children) <= load.duration_s and load.other_s == 2.0
    assert [(r.module, r.phase, r.seconds) for r in timer.records] == [
        (pkg.name("a"), "load/lazy_import", 0.875), (pkg.name("d"), "load/lazy_import", 1.0)]
    assert timer.count == 2 and timer.total_ns == 1_875_000_000


def test_imports_are_timed_only_while_active_and_on_the_timers_thread(pkg):
    rec, events = _recorder(pkg.clock)
    timer = _imports.ImportTimer(rec.phase, pkg.clock.now_ns)
    stop = _imports.start_timer(timer)
    try:
        importlib.import_module(pkg.name("d"))  # not active
        timer.active = True
        t = threading.Thread(target=importlib.import_module, args=(pkg.name("a"),))
        t.start()
        t.join()  # another thread: not timed
    finally:
        stop()
    assert pkg.name("a") in sys.modules and pkg.name("c") in sys.modules
    assert _phase_events(events) == [] and timer.records == []


def test_ignored_imports_open_no_phase_and_hide_what_they_pull_in(pkg):
    rec, events = _recorder(pkg.clock)
    timer = _imports.ImportTimer(rec.phase, pkg.clock.now_ns, ignore_modules=(pkg.name("a"),),
                                 ignore_callers=(__name__,))
    stop = _imports.start_timer(timer)
    try:
        with rec.phase("load"):
            timer.active = True
            importlib.import_module(pkg.name("a"))  # ignored by name: b and c inside it are not outermost
            __import__(pkg.name("d"))  # asked for by this module: ignored by caller
    finally:
        stop()
    (load,) = build_tree(_phase_events(events))
    assert load.children == () and timer.records == [] and timer.depth == 0
    assert _imports.importer(sys._getframe()) == __name__


def test_a_failing_import_closes_its_phase_and_the_timer_goes_on(pkg):
    rec, events = _recorder(pkg.clock)
    timer = _imports.ImportTimer(rec.phase, pkg.clock.now_ns)
    stop = _imports.start_timer(timer)
    try:
        with rec.phase("load"):
            timer.active = True
            with pytest.raises(RuntimeError):
                importlib.import_module(pkg.name("bad"))
            importlib.import_module(pkg.name("d"))
    finally:
        stop()
    (load,) = build_tree(_phase_events(events))
    assert [(c.name, c.duration_s, c.incomplete) for c in load.children] == [
        ("lazy_import", OWN_S["bad"], False), ("lazy_import", OWN_S["d"], False)]
    assert rec.current == "" and pkg.name("bad") not in sys.modules


def test_stopping_removes_the_finder_and_leaves_the_real_loaders(pkg):
    rec, _ = _recorder(pkg.clock)
    timer = _imports.ImportTimer(rec.phase, pkg.clock.now_ns)
    stop = _imports.start_timer(timer)
    assert _imports.watching() and active_hooks() == 1
    with pytest.raises(RuntimeError):
        _imports.start_timer(_imports.ImportTimer(rec.phase, pkg.clock.now_ns))  # one timer at a time
    with rec.phase("load"):
        timer.active = True
        mod = importlib.import_module(pkg.name("a"))
    stop()
    stop()  # idempotent
    assert not _imports.watching() and active_hooks() == 0 and not timer.active
    for m in (mod, sys.modules[pkg.name("b")]):
        assert type(m.__loader__).__name__ == "SourceFileLoader" and m.__spec__.loader is m.__loader__


def test_hooks_on_modules_not_imported_yet_wait_for_the_library_to_import_them(pkg):
    hooks = HookSet()
    calls: list[str] = []
    assert hooks.wrap(f"{pkg.name('c')}:VALUE", lambda fn: fn)  # not callable, found once it exists
    assert hooks.wrap(f"{pkg.name('b')}:VALUE.upper", lambda fn: 1 / 0)  # a wrapper that fails: the import goes on
    assert hooks.wrap(f"{pkg.name('d')}:OWN", lambda fn: fn)  # never imported
    assert hooks.wrap("json:dumps", lambda fn: lambda *a, **k: calls.append("dumps") or fn(*a, **k))
    assert pkg.name("c") not in sys.modules and hooks.installed == ["json:dumps"]  # nothing imported to hook it
    assert _imports.watching()
    assert importlib.import_module(pkg.name("a")).VALUE == "a"  # imports b and c, nested: their hooks are tried
    assert hooks.missing == [f"{pkg.name('c')}:VALUE (not callable)",
                             f"{pkg.name('b')}:VALUE.upper (could not be wrapped: ZeroDivisionError: division by zero)",
                             f"{pkg.name('d')}:OWN (its module was never imported)"]
    hooks.undo()
    assert not _imports.watching() and active_hooks() == 0 and pkg.name("d") not in sys.modules
    import json

    json.dumps(1)
    assert calls == []


def test_a_deferred_hook_is_installed_when_its_module_is_imported_and_undone(pkg, tmp_path):
    (tmp_path / f"{pkg.prefix}_lib.py").write_text("def f(x):\n    return x + 1\n")
    importlib.invalidate_caches()
    hooks = HookSet()
    try:
        assert hooks.wrap(f"{pkg.prefix}_lib:f", lambda fn: lambda x: fn(x) * 10)
        lib = importlib.import_module(f"{pkg.prefix}_lib")
        assert lib.f(1) == 20 and hooks.installed == [f"{pkg.prefix}_lib:f"] and hooks.missing == []
        assert not _imports.watching()  # nothing left pending: the finder is gone already
        hooks.undo()
        assert lib.f(1) == 2 and active_hooks() == 0
    finally:
        sys.modules.pop(f"{pkg.prefix}_lib", None)


def test_the_probe_times_imports_inside_workload_phases_only(pkg, tmp_path):
    rec, events = _recorder(pkg.clock)
    probe = ImportsProbe()
    ctx = ProbeContext(clock=pkg.clock, hooks=HookSet(), phase=rec.phase, trial_dir=tmp_path,
                       strategy=Strategy(model=ModelSpec(path="/x")), t0_ns=0, pid=0)
    probe.start(ctx)
    rec.add_listener(probe.on_phase)
    try:
        with rec.phase("import"):  # loadprof's own import phase: not timed
            importlib.import_module(pkg.name("c"))
        with rec.phase("load"), rec.phase("config"):
            importlib.import_module(pkg.name("a"))
        with rec.phase("estimate"):  # loadprof's work after the workload: not timed
            importlib.import_module(pkg.name("d"))
        result = probe.stop()
    finally:
        rec.remove_listener(probe.on_phase)
        ctx.hooks.undo()
    assert not _imports.watching()
    tree = {p.name: p for p in build_tree(_phase_events(events))}
    assert tree["import"].children == () and tree["estimate"].children == ()
    (config,) = tree["load"].children
    (imp,) = config.children
    assert imp.name == "lazy_import" and imp.duration_s == OWN_S["a"] + OWN_S["b"]  # c was imported already
    assert result.payload.to_dict() == {
        "imports": [{"module": pkg.name("a"), "phase": "load/config/lazy_import", "seconds": 0.75}],
        "count": 1, "seconds": 0.75}


# --------------------------------------------------------------------------------- what analysis makes of it

def _timed(phases, imports=None, metrics=None) -> TrialResult:
    return TrialResult(trial_id="t-r0", strategy_id="t", label="x", repeat_index=0, status="ok",
                       strategy=strategy_of(), metrics={"load_s": phases[0].duration_s, **(metrics or {})},
                       probes={"imports": {"imports": imports or [], "count": len(imports or []),
                                           "seconds": sum(i["seconds"] for i in imports or [])}}
                       if imports is not None else {},
                       phases=tuple(phases))


def _imp(start: float, end: float) -> PhaseTiming:
    return PhaseTiming("lazy_import", start, end)


def test_load_import_s_sums_the_import_phases_inside_the_real_load_cost_only():
    load = PhaseTiming("load", 0.0, 2.0, (PhaseTiming("config", 0.0, 0.1, (_imp(0.0, 0.05),)), _imp(0.1, 1.3)))
    warmup = PhaseTiming("warmup", 2.0, 3.0, (PhaseTiming("forward", 2.0, 2.5, (_imp(2.0, 2.25),)),
                                               PhaseTiming("prefill", 2.5, 3.0, (_imp(2.5, 2.75),))))
    harness = PhaseTiming("import", -3.0, 0.0)  # loadprof's own import phase: never counted
    t = _timed([load, warmup, harness], imports=[])
    assert load_import_s(t) == pytest.approx(0.05 + 1.2 + 0.25)  # not the warmup generate's, not loadprof's
    assert load_import_s(_timed([PhaseTiming("load", 0.0, 1.0)], imports=[])) == 0.0  # probe ran: nothing imported
    assert load_import_s(_timed([PhaseTiming("load", 0.0, 1.0)])) is None  # an older file: unknown


def test_lazy_import_finding_fires_when_the_import_dominates_the_real_load_cost():
    mods = [{"module": "transformers.models.qwen2.modeling_qwen2", "phase": "load/lazy_import", "seconds": 1.2},
            {"module": "transformers.models.qwen2.configuration_qwen2", "phase": "load/config/lazy_import", "seconds": 0.05},
            {"module": "late", "phase": "generate/lazy_import", "seconds": 9.0}]
    load = PhaseTiming("load", 0.0, 1.5, (PhaseTiming("config", 0.0, 0.1, (_imp(0.0, 0.05),)), _imp(0.1, 1.3)))
    warm = PhaseTiming("warmup", 1.5, 1.7, (PhaseTiming("forward", 1.5, 1.7),))
    (f,) = [f for f in trial_findings(_timed([load, warm], mods)) if f.kind == "lazy_import"]
    # it explains the load; no setting wins it back, so nothing is at stake and a user's mistake ranks above it
    assert f.stake_s is None and "nothing at stake" in f.stake_basis and not f.mistake
    assert f.evidence["load_import_s"] == pytest.approx(1.25) and f.evidence["load_cost_s"] == pytest.approx(1.7)
    assert f.severity == "medium" and f.evidence["share"] == pytest.approx(1.25 / 1.7)
    assert f.evidence["modules"] == ["transformers.models.qwen2.modeling_qwen2",
                                     "transformers.models.qwen2.configuration_qwen2"]
    assert "import transformers.models.qwen2.modeling_qwen2" in f.fix and "start-up" in f.fix
    assert "fresh process pays this once" in f.detail
    big = PhaseTiming("load", 0.0, 10.0, (_imp(0.1, 1.3), PhaseTiming("weights", 1.3, 10.0)))
    assert "lazy_import" not in [f.kind for f in trial_findings(_timed([big], mods))]  # 12%: the weights dominate
    # a load whose first imports its repeat round did once (a shared import): counted, and named, all the same
    shared = {"seconds": 1.4, "imports": [{"module": "transformers.models.gpt2.modeling_gpt2", "seconds": 1.4}]}
    t = _timed([PhaseTiming("load", 0.0, 0.2), warm], [])
    t = dataclasses.replace(t, metrics={**t.metrics, figures.SHARED_IMPORT_S.key: 1.4, "shared_import": shared})
    (g,) = [f for f in trial_findings(t) if f.kind == "lazy_import"]
    assert g.evidence["modules"] == ["transformers.models.gpt2.modeling_gpt2"] and "shared" in g.stake_basis
    assert g.evidence["load_cost_s"] == pytest.approx(0.2 + 1.4 + 0.2)
    tiny = PhaseTiming("load", 0.0, 0.06, (_imp(0.0, 0.05),))
    assert "lazy_import" not in [f.kind for f in trial_findings(_timed([tiny], mods))]  # 50 ms: nothing to win


# ------------------------------------------------------------------------------------------- a real trial

def _walk(node: PhaseTiming):
    yield node
    for c in node.children:
        yield from _walk(c)


@pytest.mark.e2e
def test_a_real_trial_pays_the_modeling_import_in_its_load_not_in_loadprofs_import(tiny_model, tmp_path):
    from loadprof.probes.load_phases import LOAD_TARGETS
    from loadprof.run.runner import TrialPlan, run_trial
    from loadprof.strategies.model import GenerateSpec, Trial

    # forkserver asked for: forked, yet every trial pays its own lazy import (auto would share it per round)
    s = Strategy(model=ModelSpec(path=str(tiny_model)), sampling_hz=0, isolation="forkserver",
                 generate=GenerateSpec(prompt_tokens=4, max_new_tokens=2, warmup=0))
    r = run_trial(TrialPlan(Trial(s), str(tiny_model), tmp_path))
    assert r.status == "ok", (r.reason, r.stderr_tail)
    imports = r.payload(ImportsPayload).imports
    modeling = [i for i in imports if i.module == "transformers.models.qwen2.modeling_qwen2"]
    # a finder ran for it while load was open: it was not imported before, by loadprof's import phase or a probe
    assert len(modeling) == 1 and modeling[0].phase.startswith("load/") and modeling[0].seconds > 0
    assert all(i.phase.split("/")[0] in ("load", "validate", "warmup", "generate") for i in imports)
    load = r.phase("load")
    assert "lazy_import" in [c.name for c in load.children]  # load/lazy_import: the first from_pretrained's own import
    for node in _walk(load):  # one clock: per level, children sum to at most their parent
        assert sum(c.duration_s for c in node.children) <= node.duration_s + 1e-9
    assert r.phase("import").children == ()
    # the phases probe's hooks on transformers.modeling_utils waited for the load to import it, and still worked
    assert {"config", "weights", "post_init"} <= {c.name for c in load.children}
    assert r.probes["phases"].hooks_installed >= len(LOAD_TARGETS)
    assert not [n for n in r.notes if "never imported" in n]
    enriched = enrich(r)
    assert 0 < enriched.metrics["load_import_s"] <= enriched.metrics["load_cost_s"]
    assert enriched.metrics["load_import_s"] >= modeling[0].seconds - 1e-6
