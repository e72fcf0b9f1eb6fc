"""isolation: forkserver (trials forked from a pre-imported zygote: still isolated, dying alone, gone with the
sweep or its parent) and per-sweep constants (a device's copy bandwidth measured once per sweep)."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from loadprof.core.payloads import ImportsPayload
from loadprof.core.payloads import MachinePayload
from loadprof.run import forkclient
from loadprof.analysis.knobs import HARNESS
from loadprof.core.clock import DEFAULT_CLOCK
from loadprof.run.constants import SweepConstants
from loadprof.core.errors import SpecError
from loadprof.probes import bandwidth as bw
from loadprof.probes._hooks import HookSet
from loadprof.probes.base import ProbeContext
from loadprof.reports.sections import harness_line
from loadprof.results.model import TrialResult
from loadprof.run.session import Session
from loadprof.strategies.expand import Sweep, expand
from loadprof.strategies.model import GenerateSpec, LoaderSpec, LoadSpec, ModelSpec, Strategy
from loadprof.strategies.schema import sweep_schema

from .conftest import EXAMPLES

#: a trial's top-level phases, whatever its isolation and whether it measured the bandwidth or reused it
PHASES = ["import", "load", "warmup", "generate", "trace", "membw", "estimate", "cleanup"]


def _strategy(model: Path, label: str, target: str | None = None, **kw) -> Strategy:
    loader = LoaderSpec(target=f"faulty_loaders:{target}", sys_path=(str(EXAMPLES),)) if target else None
    gen = GenerateSpec(prompt_tokens=4, max_new_tokens=2, warmup=0) if target is None else None
    return Strategy(model=ModelSpec(path=str(model)), label=label, load=LoadSpec(loader=loader, **kw.pop("load", {})),
                    generate=gen, sampling_hz=0, **kw)


def _result(trial_id: str, status: str, **metrics) -> TrialResult:
    s = Strategy(model=ModelSpec(path="/x"))
    return TrialResult(trial_id=trial_id, strategy_id=s.id, label="x", repeat_index=0, status=status, strategy=s,
                       metrics=metrics)


def test_isolation_is_a_validated_harness_setting_that_leaves_default_ids_alone(tmp_path):
    s = Strategy(model=ModelSpec(path="/x"))
    assert s.isolation == "auto" and s.id == "ba5998fb32cb"  # the id it had before the key existed
    assert dataclasses.replace(s, isolation="fresh").id == s.id  # the default before auto: its ids hold too
    forked = dataclasses.replace(s, isolation="forkserver")
    assert forked.id != s.id and Strategy.from_dict(forked.to_dict()) == forked
    with pytest.raises(SpecError) as e:
        Strategy(model=ModelSpec(path="/x"), isolation="fork")
    assert e.value.path == "isolation"
    assert "isolation" in HARNESS  # a measurement setting: never the reason for a pick
    doc = yaml.safe_load("model: {synthetic: {shape: tiny}}\nmatrix: {isolation: [fresh, forkserver]}\n")
    assert [st.isolation for st in expand(doc, "s.yaml", tmp_path).strategies] == ["fresh", "forkserver"]
    assert sweep_schema()["properties"]["base"]["anyOf"][0]["properties"]["isolation"]["enum"] == [
        "auto", "fresh", "forkserver"]


def test_sweep_constants_keep_only_an_ok_trials_own_measurement():
    c = SweepConstants()
    c.learn(_result("a-r0", "failed", membw_gb_s=5.0, membw_scope="cpu@h"))  # the trial failed
    c.learn(_result("b-r0", "ok", membw_scope="cpu@h"))  # its copy failed: no figure
    c.learn(_result("c-r0", "ok", membw_gb_s=0.0, membw_scope="cpu@h"))
    c.learn(_result("d-r0", "ok", membw_gb_s=5.0, membw_scope="cpu@h", membw_source="trial x"))  # not its own
    assert c.for_worker() == {}
    c.learn(_result("e-r0", "ok", membw_gb_s=7.5, membw_bytes=8, membw_scope="cpu@h", h2d_pinned_gb_s=3.0,
                    decode_tok_s=1.0, membw_source=None, h2d_bytes=None))  # the payload writes absent fields as None
    c.learn(_result("f-r0", "ok", membw_gb_s=1.0, membw_scope="cpu@h"))  # the first measurement stays
    assert c.for_worker() == {"bandwidth": {"cpu@h": {"trial": "e-r0", "figures": {
        "membw_gb_s": 7.5, "membw_bytes": 8, "membw_scope": "cpu@h", "h2d_pinned_gb_s": 3.0}}}}


def test_bandwidth_probe_reuses_a_known_figure_without_copying(tmp_path, monkeypatch):
    def no_copy(*a, **k):
        raise AssertionError("measured although the sweep knew the figure")

    monkeypatch.setattr(bw, "measure_copy_bandwidth", no_copy)
    scope = bw.device_scope("cpu")
    measured = {"membw_gb_s": 9.0, "membw_bytes": 2**28, "membw_repeats": 3, "membw_device": "cpu",
                "membw_method": "copy", "membw_scope": scope}
    known = {"bandwidth": {scope: {"trial": "t-r0", "figures": measured}}}
    ctx = ProbeContext(clock=DEFAULT_CLOCK, hooks=HookSet(), phase=None, trial_dir=tmp_path, strategy=None, t0_ns=0, pid=0,
                       constants=known)
    model = type("M", (), {"device": "cpu", "parameters": lambda self: ()})()
    got = bw.BandwidthProbe().after_workload(model, ctx).to_dict()
    assert {k: v for k, v in got.items() if v is not None} == {**measured, "membw_source": "trial t-r0"}
    other = dict(known, bandwidth={"cuda:0@elsewhere": known["bandwidth"][scope]})
    with pytest.raises(AssertionError, match="measured"):  # another device's figure is not this one's
        bw.BandwidthProbe().after_workload(model, dataclasses.replace(ctx, constants=other))


@pytest.mark.e2e
def test_auto_shares_the_loads_lazy_import_per_repeat_round_and_counts_it_in_the_load_cost(tiny_model, tmp_path):
    from loadprof.analysis.derive import load_cost_s, load_import_s

    strategies = (_strategy(tiny_model, "a"), _strategy(tiny_model, "b", load={"dtype": "float32"}),
                  _strategy(tiny_model, "own", "normal"))  # a custom loader's imports are its own
    sweep = Sweep(name="shared", source="test", description="", repeat=2, strategies=strategies)
    result = Session(sweep, tmp_path / "out").run()
    assert all(t.status == "ok" for t in result.trials), [(t.label, t.reason) for t in result.trials]
    shared = [t for t in result.trials if t.label != "own"]
    subs = {}
    for t in shared:
        record = t.metrics["shared_import"]
        assert t.harness["share_import"] and t.metrics["shared_import_s"] == record["seconds"] > 0
        # done once, before the trial's clock, by its round's sub-zygote: the modeling module is not the trial's
        # own import, it is in the shared record, and the real load cost and its import seconds include it
        assert any(i["module"].endswith(".modeling_qwen2") for i in record["imports"])
        assert record["others_cpu_cores"] is None or record["others_cpu_cores"] >= 0  # its own busy reading
        assert not any(i.module.endswith(".modeling_qwen2") for i in t.payload(ImportsPayload).imports)
        assert load_cost_s(t) >= t.metrics["load_s"] + record["seconds"]
        assert load_import_s(t) >= record["seconds"]
        subs.setdefault(t.repeat_index, set()).add(record["pid"])
    assert [len(p) for p in subs.values()] == [1, 1] and subs[0] != subs[1]  # one per round, each round its own
    own = [t for t in result.trials if t.label == "own"]
    assert all("shared_import_s" not in t.metrics and not t.harness.get("share_import") for t in own)
    for pid in set().union(*subs.values()):  # the sub-zygotes ended with the sweep
        assert not _alive(pid), pid


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is not alive
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.e2e
def test_forked_trials_are_pre_imported_isolated_and_end_with_the_sweep(tiny_model, tmp_path):
    f = {"isolation": "forkserver"}
    strategies = (_strategy(tiny_model, "normal", **f), _strategy(tiny_model, "segfault", "segfault", **f),
                  _strategy(tiny_model, "hang", "hang", timeout_s=15, **f),  # time to reach load when busy
                  _strategy(tiny_model, "normal-again", load={"dtype": "float32"}, **f),
                  _strategy(tiny_model, "cold", load={"file_cache": "cold"}, **f))
    sweep = Sweep(name="forked", source="test", description="", repeat=1, strategies=strategies)
    result = Session(sweep, tmp_path / "out").run()
    by = {t.label: t for t in result.trials}
    forked = [by[k] for k in ("normal", "segfault", "hang", "normal-again")]
    assert {t.harness["isolation"] for t in forked} == {"forkserver"}
    assert len({t.harness["forkserver_pid"] for t in forked}) == 1  # one zygote, still forking after a crash
    assert [t.harness.get("forkserver_start_s") is not None for t in result.trials].count(True) == 1
    for t in (by["normal"], by["normal-again"]):
        assert t.status == "ok", (t.reason, t.stderr_tail)
        assert [p.name for p in t.phases] == PHASES
        assert t.metrics["import_s"] < t.harness["forkserver_import_s"]  # pre-imported, paid once
        # ... but not what the load imports: each forked trial's first from_pretrained pays for its modeling module
        imports = t.payload(ImportsPayload)
        assert [i.phase.split("/")[0] for i in imports.imports if i.module.endswith(".modeling_qwen2")] \
            == ["load"] and t.phase("load/lazy_import") is not None
        assert t.harness["import"] == "pre-imported" and t.harness["overhead_s"] >= 0
        assert t.payload(MachinePayload).worker_cpu_s > 0.1  # the zygote reaped it: its CPU is still the trial's
    seg = by["segfault"]
    assert seg.status == "crashed" and seg.signal == "SIGSEGV" and "Segmentation fault" in seg.stderr_tail
    assert by["hang"].status == "timeout" and by["hang"].phase("load").incomplete
    cold = by["cold"]  # a cold page cache measures the cold import too: a fresh interpreter
    assert cold.status == "ok" and cold.harness["isolation"] == "fresh" and "cold" in cold.harness["isolation_note"]
    assert cold.metrics["import_s"] > by["normal"].metrics["import_s"] and [p.name for p in cold.phases] == PHASES
    ok = [t for t in _run_order(result, sweep) if t.status == "ok"]
    assert ok[0].metrics.get("membw_source") is None and ok[0].metrics["membw_gb_s"] > 0  # measured once ...
    for t in ok[1:]:  # ... and reused, the figure and where it came from
        assert t.metrics["membw_source"] == f"trial {ok[0].trial_id}"
        assert t.metrics["membw_gb_s"] == ok[0].metrics["membw_gb_s"] and t.metrics.get("roofline_tok_s")
    assert "4 trials forked from 1 pre-imported zygote(s)" in harness_line(result)
    assert not _alive(forked[0].harness["forkserver_pid"])  # shut down with the sweep


@pytest.mark.e2e
def test_a_default_sweep_forks_warm_trials_traces_once_and_reuses_the_first_trials_bandwidth(tiny_model, tmp_path):
    sweep = Sweep(name="auto", source="test", description="", repeat=2,
                  strategies=(_strategy(tiny_model, "normal"),))  # no isolation setting: auto
    assert sweep.strategies[0].isolation == "auto"
    first, second = _run_order(Session(sweep, tmp_path / "out").run(), sweep)
    for t in (first, second):
        assert t.status == "ok", (t.reason, t.stderr_tail)
        assert t.harness["isolation"] == "forkserver" and "auto" in t.harness["isolation_note"]
        assert t.metrics["import_s"] < 0.5 < t.harness["forkserver_import_s"]  # pre-imported, paid once
    assert [p.name for p in first.phases] == PHASES  # the first ok repeat traces ...
    assert [p.name for p in second.phases] == [p for p in PHASES if p != "trace"]  # ... the second does not
    assert "generate_start_alloc_bytes" in first.metrics and "generate_start_alloc_bytes" not in second.metrics
    assert any(f"traced once per configuration, by trial {first.trial_id}" in n for n in second.notes)
    assert first.metrics["membw_scope"] == bw.device_scope("cpu") and first.metrics.get("membw_source") is None
    assert second.metrics["membw_source"] == f"trial {first.trial_id}"
    assert second.metrics["membw_gb_s"] == first.metrics["membw_gb_s"]
    assert second.phase("membw").duration_s < first.phase("membw").duration_s


KILLED_PARENT = """
import sys, threading
from pathlib import Path
from loadprof.run.runner import TrialPlan, run_trial
from loadprof.strategies.model import LoaderSpec, LoadSpec, ModelSpec, Strategy, Trial
model, examples, out, where = sys.argv[1:]
s = Strategy(model=ModelSpec(path=model), generate=None, timeout_s=120, sampling_hz=0, isolation="forkserver",
             load=LoadSpec(loader=LoaderSpec(target="faulty_loaders:hang", sys_path=(examples,))))
plan = TrialPlan(Trial(s), model, Path(out))
if where == "thread":  # as under --jobs: the zygote started from a thread that is not the main one
    t = threading.Thread(target=run_trial, args=(plan,))
    t.start()
    t.join()
else:
    run_trial(plan)
"""


@pytest.mark.e2e
@pytest.mark.parametrize("where", ["main", "thread"])
def test_killing_the_parent_leaves_no_zygote_or_child(tiny_model, tmp_path, where):
    psutil = pytest.importorskip("psutil")
    parent = subprocess.Popen([sys.executable, "-c", KILLED_PARENT, str(tiny_model), str(EXAMPLES),
                               str(tmp_path / "t"), where])
    procs = []
    try:
        deadline = time.monotonic() + 600  # a state, with room for a busy machine's imports
        while time.monotonic() < deadline and len(procs) < 2:  # the zygote, and the trial it forked
            time.sleep(0.2)
            procs = [p for p in psutil.Process(parent.pid).children(recursive=True)]
        assert len(procs) >= 2 and any("loadprof.worker.forkserver" in " ".join(p.cmdline()) for p in procs), procs
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and any(_alive(p.pid) for p in procs):
        time.sleep(0.1)
    assert not [p for p in procs if _alive(p.pid)]


def _run_order(result, sweep: Sweep) -> list[TrialResult]:
    by_id = {t.trial_id: t for t in result.trials}
    return [by_id[t.id] for t in sweep.trials()]


def _alive(pid: int) -> bool:
    """Running (a zombie is dead: it is reaped here if it was re-parented to this process, a subreaper)."""
    import psutil

    try:
        if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
            return True
    except psutil.Error:
        return False
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    return False


@pytest.fixture(autouse=True)
def _no_zygote_left():
    yield
    forkclient.shutdown_all()
