"""loadprof run -- CMD: until-conditions on a fake clock, argument parsing, the program's phase shaping, the
bootstrap's environment handling and sitecustomize chaining; end-to-end runs of unmodified programs (slow)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from loadprof.cli.program import build_strategy, program_command
from loadprof.core.errors import LoadprofError, SpecError
from loadprof.core.phases import PhaseRecorder, build_tree
from loadprof.run.program import exit_code, program_env
from loadprof.run.until import Until, UntilWatch
from loadprof.strategies.model import ProgramSpec, Strategy
from loadprof.worker.program import BOOTSTRAP_DIR, EVENTS_FD, clean_environment
from loadprof.worker.program_hooks import short_name, source_name
from loadprof.worker.program_phases import ProgramPhases

PROGRAMS = Path(__file__).resolve().parent / "fixtures" / "programs"
BOOT = Path(__file__).resolve().parents[1] / "profiler" / "worker" / "bootstrap"


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t

    def now_ns(self) -> int:
        return int(self.t * 1e9)


def phase(name: str, edge: str) -> dict:
    return {"type": "phase", "name": name, "edge": edge, "t_ns": 0}


# ---- until -------------------------------------------------------------------------------------------------------

def test_until_parses_kinds_and_seconds():
    assert Until.parse("loaded", 2).kind == "loaded"
    assert Until.parse("first-token").kind == "first-token"
    assert Until.parse("90s").seconds == 90.0
    assert Until.parse("1.5").seconds == 1.5
    for bad in ("soon", "0", "-3"):
        with pytest.raises(LoadprofError):
            Until.parse(bad)


def test_until_loaded_waits_for_the_settle_time_after_the_last_load():
    clock = FakeClock()
    watch = UntilWatch(Until.parse("loaded", 3.0), clock)
    assert watch.due() is None  # nothing loaded yet
    watch.feed(phase("load/model:a", "start"))
    clock.t = 10
    assert watch.due() is None  # a load is open
    watch.feed(phase("load/model:a/weights", "end"))  # inner steps do not count
    watch.feed(phase("load/model:a", "end"))
    clock.t = 12.9
    assert watch.due() is None
    watch.feed(phase("load/model:b", "start"))  # a second load within the settle time restarts it
    clock.t = 14
    watch.feed(phase("load/model:b", "end"))
    clock.t = 16.9
    assert watch.due() is None
    clock.t = 17.0
    assert "2 load step(s)" in (watch.due() or "")


def test_until_first_token_and_seconds():
    clock = FakeClock()
    watch = UntilWatch(Until.parse("first-token"), clock)
    watch.feed(phase("generate/prefill", "start"))
    assert watch.due() is None
    watch.feed(phase("generate/prefill", "end"))
    assert "first-token" in (watch.due() or "")
    clock = FakeClock()
    timed = UntilWatch(Until.parse("5"), clock)
    clock.t = 4.99
    assert timed.due() is None
    clock.t = 5
    assert timed.due() is not None
    assert UntilWatch(Until.parse("exit"), clock).due() is None


# ---- arguments, strategy, exit codes ------------------------------------------------------------------------------

def test_program_command_forms():
    assert program_command(("python", "app.py", "x"), None) == ["python", "app.py", "x"]
    assert program_command(("app.py", "x"), None, python="/py") == ["/py", "app.py", "x"]
    assert program_command(("--port", "1"), "pkg.serve", python="/py") == ["/py", "-m", "pkg.serve", "--port", "1"]
    with pytest.raises(LoadprofError):
        program_command((), None)


def test_program_strategy_round_trips_and_keeps_model_strategies_ids():
    s = build_strategy(["python", "app.py"], until="loaded", settle=2.0, sampling_hz=50, memory_limit=None,
                       timeout=None)
    assert s.program == ProgramSpec(cmd=("python", "app.py"), until="loaded", settle_s=2.0)
    assert Strategy.from_dict(json.loads(json.dumps(s.to_dict()))) == s
    assert s.model.label == "python app.py"
    plain = Strategy.from_dict({"model": {"path": "x"}})
    assert "program" not in plain.to_dict()
    with pytest.raises(SpecError):
        ProgramSpec(cmd=())
    with pytest.raises(SpecError):
        ProgramSpec(cmd=("x",), until="never")


def test_exit_codes():
    assert exit_code(3, None, False, None) == 3  # the program's own
    assert exit_code(-9, None, False, None) == 137  # killed by a signal loadprof did not send
    assert exit_code(-15, "--until loaded: ...", False, None) == 0
    assert exit_code(-15, "SIGINT received", False, 2) == 130
    assert exit_code(-15, "--timeout", True, None) == 124


def test_program_env_puts_the_bootstrap_first_and_the_child_removes_it(tmp_path):
    s = build_strategy(["python", "a.py"], until="exit", settle=3, sampling_hz=0, memory_limit=None, timeout=None)
    env = program_env(s, 7, tmp_path / "spec.json", base={"PYTHONPATH": "/mine"})
    assert env["PYTHONPATH"].split(os.pathsep)[1:] == ["/mine"] and env[EVENTS_FD] == "7"
    taken = clean_environment(env)
    assert env == {"PYTHONPATH": "/mine"} and taken[EVENTS_FD] == "7" and BOOTSTRAP_DIR in taken
    env = program_env(s, 7, tmp_path / "spec.json", base={})
    clean_environment(env)
    assert env == {}


def test_load_names():
    assert source_name((object, "/m/tiny"), {}) == "/m/tiny"
    assert source_name((), {"pretrained_model_name_or_path": "org/name"}) == "org/name"
    assert short_name("/models/tiny/") == "tiny"
    assert short_name("Qwen/Qwen2.5-0.5B") == "Qwen--Qwen2.5-0.5B"


def test_a_matrix_varies_program_env_by_dotted_key_or_by_variable_and_keeps_the_base_env():
    from loadprof.strategies.expand import expand

    base = {"name": "t", "program": {"cmd": ["python", "app.py"], "env": {"HF_HUB_OFFLINE": "1"}}}
    dotted = expand({**base, "matrix": {"program.env.OMP_NUM_THREADS": ["1", 2]}})
    nested = expand({**base, "matrix": {"program": {"env": {"OMP_NUM_THREADS": ["1", "2"]}}}})
    assert [s.id for s in dotted.strategies] == [s.id for s in nested.strategies]
    assert [dict(s.program.env) for s in dotted.strategies] == [
        {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}, {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "2"}]
    assert [s.label for s in dotted.strategies] == ["OMP_NUM_THREADS=1", "OMP_NUM_THREADS=2"]
    assert {s.model.label for s in dotted.strategies} == {"python app.py"}  # one program, two configurations
    whole = expand({**base, "matrix": {"program": {"env": [{"OMP_NUM_THREADS": "1"}], "cmd": [["python", "a.py"],
                                                                                              ["python", "b.py"]]}}})
    assert [s.program.cmd for s in whole.strategies] == [("python", "a.py"), ("python", "b.py")]
    for bad in ({"program.env.A": ["1"], "program": {"env": {"A": ["2"]}}}, {"program.env.A": "1"},
                {"program.env.A": [["1"]]}):
        with pytest.raises(SpecError):
            expand({**base, "matrix": bad})
    with pytest.raises(SpecError):
        expand({**base, "base": {"program": {"cmd": ["x"]}}})  # top level and base: one of them


# ---- phase shaping --------------------------------------------------------------------------------------------------

def _phases() -> tuple[ProgramPhases, list[dict], FakeClock]:
    clock, evs = FakeClock(), []
    rec = PhaseRecorder(clock, evs.append, 0)
    return ProgramPhases(rec, clock.now_ns), evs, clock


def test_loads_share_one_envelope_that_ends_at_the_first_generate_of_an_unused_model():
    ph, evs, clock = _phases()
    with ph.step("model:a", load=True):
        clock.t = 2
        with ph.step("weights", load=True):
            clock.t = 3
    ph.model_loaded()
    clock.t = 5  # the program's own work after the load
    with ph.step("tokenizer:t", load=True):
        clock.t = 6
    clock.t = 9
    with ph.step("generate", load=False):
        clock.t = 10
    ph.finish()
    tree = build_tree([e for e in evs if e["type"] == "phase"])
    assert [(p.name, p.start_s, p.end_s) for p in tree] == [("load", 0, 9), ("generate", 9, 10)]
    assert [c.name for c in tree[0].children] == ["model:a", "tokenizer:t"]
    assert tree[0].children[0].children[0].name == "weights"


def test_envelope_of_used_models_ends_at_the_last_load_step_and_finish_closes_what_is_open():
    ph, evs, clock = _phases()
    with ph.step("model:a", load=True):
        clock.t = 1
    ph.model_loaded()
    with ph.step("forward:a", load=True):
        clock.t = 2
    ph.model_used()
    clock.t = 8
    with ph.step("generate", load=False):
        clock.t = 9
    with ph.step("model:b", load=True):  # a later load: a second envelope, cut short by the program's end
        clock.t = 12
        ph.finish()
    tree = build_tree([e for e in evs if e["type"] == "phase"])
    assert [(p.name, p.start_s, p.end_s) for p in tree] == [("load", 0, 2), ("generate", 8, 9), ("load", 9, 12)]
    assert not any(p.incomplete for p in tree)


def test_another_threads_steps_are_skipped_while_one_is_open():
    import threading

    ph, evs, _ = _phases()
    seen = []
    with ph.step("model:a", load=True):
        t = threading.Thread(target=lambda: seen.append(ph.may_open()))
        t.start()
        t.join()
    assert seen == [False]


def test_imports_inside_a_step_are_lazy_import_phases_of_it_and_others_are_not(tmp_path, monkeypatch):
    from loadprof.core.clock import DEFAULT_CLOCK
    from loadprof.probes import _imports

    for name in ("lp_mod_in", "lp_mod_out"):
        (tmp_path / f"{name}.py").write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    evs: list[dict] = []
    ph = ProgramPhases(PhaseRecorder(DEFAULT_CLOCK, evs.append, 0), DEFAULT_CLOCK.now_ns)
    timer = _imports.ImportTimer(ph.load_step, DEFAULT_CLOCK.now_ns, active_when=ph.open_here)
    stop = _imports.start_timer(timer)
    try:
        import lp_mod_out  # noqa: F401 - no step open: the program's own import, not timed
        with ph.step("model:a", load=True):
            import lp_mod_in  # noqa: F401
        ph.finish()
    finally:
        stop()
        for name in ("lp_mod_in", "lp_mod_out"):
            sys.modules.pop(name, None)
    assert [(r.module, r.phase) for r in timer.records] == [("lp_mod_in", "load/model:a/lazy_import")]
    tree = build_tree([e for e in evs if e["type"] == "phase"])
    assert [p.name for p in tree] == ["load"] and [c.name for c in tree[0].children[0].children] == ["lazy_import"]
    assert not _imports.watching()


# ---- bootstrap ----------------------------------------------------------------------------------------------------

def test_bootstrap_chains_to_the_sitecustomize_it_shadows(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text("import builtins\nbuiltins.CHAINED = True\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(BOOT), str(site)])}
    env.pop(EVENTS_FD, None)
    out = subprocess.run([sys.executable, "-c", "import builtins, sitecustomize; "
                          "print(getattr(builtins, 'CHAINED', False), sitecustomize.__file__)"],
                         env=env, capture_output=True, text=True, check=True).stdout.split()
    assert out[0] == "True" and out[1] == str(site / "sitecustomize.py")


# ---- end to end (slow) --------------------------------------------------------------------------------------------

def _model(seed: int = 0) -> str:
    from loadprof.strategies import synthetic
    from loadprof.strategies.model import SyntheticSpec

    return str(synthetic.make_model(SyntheticSpec(shape="tiny", dtype="bfloat16", seed=seed)))


def _run(out: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "loadprof.cli.main", "run", "--out", str(out), *args],
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.e2e
def test_an_unmodified_script_keeps_its_exit_code_and_output_and_its_slow_step_is_found(tmp_path):
    out = tmp_path / "out"
    proc = _run(out, "--", sys.executable, str(PROGRAMS / "app.py"), _model())
    assert proc.returncode == 3, proc.stderr[-3000:]
    assert "app: generated" in proc.stdout
    report = json.loads((out / "report.json").read_text())
    trial = report["trials"][0]
    assert trial["status"] == "ok" and trial["metrics"]["program_exit_code"] == 3
    logs = out / "trials" / trial["trial_id"]  # teed: the terminal got it, and the trial folder keeps it
    assert "app: generated" in (logs / trial["artifacts"]["stdout"]).read_text()
    assert (logs / trial["artifacts"]["stderr"]).is_file()
    assert [p["name"] for p in trial["phases"]][:2] == ["load", "generate"]
    top = report["findings"][0]
    assert "ModelManager.fingerprint_weights" in json.dumps(top), top


@pytest.mark.e2e
def test_a_programs_first_load_is_mostly_lazy_import_and_says_so(tmp_path):
    out = tmp_path / "out"
    proc = _run(out, "--sampling-hz", "0", "--", sys.executable, str(PROGRAMS / "load_only.py"), _model())
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    trial = report["trials"][0]
    imp, cost = trial["metrics"]["load_import_s"], trial["metrics"]["load_cost_s"]
    assert 0 < imp <= cost
    imports = trial["probes"]["imports"]
    assert imports["count"] >= 1 and all(i["phase"].startswith("load/model:") for i in imports["imports"])
    assert any(i["module"].endswith("modeling_qwen2") for i in imports["imports"])
    from loadprof.analysis.lazy_import import LAZY_IMPORT_MIN_S, LAZY_IMPORT_SHARE

    if imp > LAZY_IMPORT_SHARE * cost and imp >= LAZY_IMPORT_MIN_S:  # the rule's thresholds (on a tiny model: met)
        assert "lazy_import" in [f["kind"] for f in report["findings"]]


@pytest.mark.e2e
def test_a_program_sweep_over_omp_threads_runs_reports_recommends_and_diffs(tmp_path):
    yaml_file = tmp_path / "threads.yaml"
    yaml_file.write_text(json.dumps({  # JSON is YAML
        "name": "threads", "program": {"cmd": [sys.executable, str(PROGRAMS / "load_only.py"), _model()]},
        "base": {"sampling_hz": 0}, "matrix": {"program.env.OMP_NUM_THREADS": ["1", "2"]}}))
    out = tmp_path / "out"

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "loadprof.cli.main", *args], capture_output=True, text=True,
                              timeout=300)

    ran = cli("compare", str(yaml_file), "--out", str(out))
    assert ran.returncode == 0, ran.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert sorted(t["label"] for t in report["trials"]) == ["OMP_NUM_THREADS=1", "OMP_NUM_THREADS=2"]
    assert all(t["status"] == "ok" and t["metrics"]["load_cost_s"] > 0 for t in report["trials"])
    # diff gates only status here: one repeat cannot tell figures apart (exit 3, undecided, by design)
    for args in (("recommend", str(out)), ("report", str(out)), ("diff", str(out), str(out), "--fail-on", "status")):
        res = cli(*args)
        assert res.returncode == 0, (args, res.stdout[-2000:], res.stderr[-2000:])
        said = "no gated regression" if args[0] == "diff" else "OMP_NUM_THREADS"  # a sweep against itself
        assert said in res.stdout + res.stderr, (args, res.stdout[-2000:])
    rec = cli("recommend", str(out), "--objective", "load")
    assert "OMP_NUM_THREADS=" in rec.stdout, rec.stdout[-2000:]


@pytest.mark.e2e
def test_a_server_is_stopped_once_loaded_and_leaves_nothing_running(tmp_path):
    import psutil

    out = tmp_path / "out"
    proc = _run(out, "--until", "loaded", "--settle", "1", "--", sys.executable, str(PROGRAMS / "server.py"),
                _model())
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "server: listening" in proc.stdout
    trial = json.loads((out / "report.json").read_text())["trials"][0]
    assert trial["metrics"]["program_stopped"].startswith("--until loaded")
    load = next(p for p in trial["phases"] if p["name"] == "load")
    assert trial["wall_s"] - load["end_s"] < 1 + 10  # stopped within the settle time (plus a busy machine's slack)
    left = [p for p in psutil.process_iter(["cmdline"]) if str(PROGRAMS / "server.py") in (p.info["cmdline"] or [])]
    assert left == []


@pytest.mark.e2e
def test_two_models_and_a_tokenizer_are_three_named_load_trees(tmp_path):
    sys.path.insert(0, str(PROGRAMS))
    try:
        from make_tokenizer import make_tokenizer
    finally:
        sys.path.remove(str(PROGRAMS))
    tok = make_tokenizer(str(tmp_path / "tok"))
    a, b = _model(0), _model(1)
    out = tmp_path / "out"
    proc = _run(out, "--sampling-hz", "0", "--", sys.executable, str(PROGRAMS / "two_models.py"), a, b, tok)
    assert proc.returncode == 0, proc.stderr[-3000:]
    trial = json.loads((out / "report.json").read_text())["trials"][0]
    load = next(p for p in trial["phases"] if p["name"] == "load")
    assert [c["name"] for c in load["children"]] == [f"model:{Path(a).name}", f"model:{Path(b).name}", "tokenizer:tok"]
    assert [x["source"] for x in trial["metrics"]["program_loads"]] == [a, b, tok]
