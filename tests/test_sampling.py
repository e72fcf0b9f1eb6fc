"""Sampling probe: py-spy-shaped speedscope parsing and frame-based attribution on hand-built profiles (exact),
the Sampler's failure paths, and a real py-spy + thread-state run on a slow loader."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest

from loadprof.probes import attribution, sampling
from loadprof.probes.attribution import attribute, def_line, frame_path, is_user_file, matcher
from loadprof.probes.sampling import Sampler
from loadprof.probes.stacks import Frame, Sample, parse_speedscope

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "sampling" / "busy_load.py"
ROOT = attribution.ROOT
W = str(ROOT / "profiler" / "worker.py")
LOADERS = str(ROOT / "strategies" / "loaders.py")
SP = "/venv/lib/python3.11/site-packages"
MU, CML = f"{SP}/transformers/modeling_utils.py", f"{SP}/transformers/core_model_loading.py"
AUTO, CFG = f"{SP}/transformers/models/auto/auto_factory.py", f"{SP}/transformers/configuration_utils.py"
THREADING = sysconfig.get_paths()["stdlib"] + "/threading.py"
USER = "/home/u/mm/manager.py"
READ, CONV, P_READ, P_CONV = 1321, 1323, 147, 150  # pinned via the fixture below, whatever is installed
PINNED = {"transformers/core_model_loading.py": {"read": READ, "convert": CONV},
          "probes/load_phases.py": {"read": P_READ, "convert": P_CONV}}
REAL_MATERIALIZE_LINES = attribution.materialize_lines


@pytest.fixture(autouse=True)
def _pinned_lines(monkeypatch):
    monkeypatch.setattr(attribution, "materialize_lines", lambda: PINNED)


def _doc(threads: list[tuple[int, str, list[list[tuple[str, str, int]]]]]) -> dict:
    """A py-spy 0.4.3-shaped speedscope document: synthetic thread frame first, root-first stacks, 0.01 s each."""
    frames: list[tuple[str, str, int]] = []

    def fid(fr: tuple[str, str, int]) -> int:
        if fr not in frames:
            frames.append(fr)
        return frames.index(fr)

    profiles = []
    for tid, name, stacks in threads:
        samples = [[fid((f"thread ({tid}): {name}" if k or len(stacks) == 1 else f"thread ({tid})", "", 0))]
                   + [fid(f) for f in st] for k, st in enumerate(stacks)]  # the first may lack the name, as in py-spy's
        profiles.append({"type": "sampled", "name": f'Thread {tid} ""', "unit": "seconds", "startValue": 0.0,
                         "endValue": 0.01 * len(samples), "samples": samples, "weights": [0.01] * len(samples)})
    return {"profiles": profiles, "exporter": "py-spy@0.4.3",
            "shared": {"frames": [{"name": n, "file": f, "line": ln, "col": None} for n, f, ln in frames]}}


ROOT_STACK = [("<module>", W, 300), ("main", W, 240), ("run_trial", W, 150)]
LOAD = ROOT_STACK + [("run_steps", W, 165), ("step_load", W, 196), ("load", LOADERS, 160),
                     ("load_custom", LOADERS, 140), ("ModelManager.load", USER, 12)]
FP = LOAD + [("_BaseAutoModelClass.from_pretrained", AUTO, 370), ("PreTrainedModel.from_pretrained", MU, 4000)]
POOL = [("Thread._bootstrap", THREADING, 1002), ("_worker", THREADING, 83), ("_WorkItem.run", THREADING, 58),
        ("spawn_materialize.<locals>._job", CML, 1345)]
MAIN_STACKS = (
    [ROOT_STACK + [("import_stack", W, 40), ("_find_and_load", "<frozen importlib._bootstrap>", 1176)]] * 2
    + [LOAD + [("ModelManager.validate", USER, 30), ("Module.named_modules", f"{SP}/torch/nn/module.py", 5)]] * 4
    + [LOAD + [("ModelManager.validate", USER, 32), ("Module.named_modules", f"{SP}/torch/nn/module.py", 5)]]
    + [LOAD + [("ModelManager.validate", USER, 31), ("check_one", USER, 50)]]
    + [FP + [("PreTrainedModel._load_pretrained_model", MU, 4100), ("convert_and_load_state_dict_in_model", CML, 9),
             ("Condition.wait", THREADING, 331)]] * 2
    + [FP + [("AutoConfig.from_pretrained", CFG, 1), ("PreTrainedConfig.from_pretrained", CFG, 2)]]
    + [FP + [("Qwen2ForCausalLM.__init__", f"{SP}/transformers/models/qwen2/modeling_qwen2.py", 400)]]
    + [ROOT_STACK + [("model_facts", W, 80)]]
    + [[]]  # only py-spy's thread frame: no Python frame at that instant
)
DOC = _doc([
    (100, "MainThread", MAIN_STACKS),
    (101, "ThreadPoolExecutor-0_0", [POOL + [("_materialize_copy", CML, READ)]] * 3
     + [POOL + [("_materialize_copy", CML, CONV)]] * 2 + [POOL + [("_materialize_copy", CML, 1324)]]),
    (103, "ThreadPoolExecutor-0_1", [POOL + [("LoadPhasesProbe._timed_copy.<locals>.copy",
                                              str(ROOT / "probes" / "load_phases.py"), P_READ)]]),
    (102, "loadprof-memory", [[("Thread.run", THREADING, 982), ("MemoryProbe._sample", str(ROOT / "probes/memory.py"),
                                                                78)]]),
])


def test_parse_threads_labels_and_root_first_stacks():
    samples = parse_speedscope(DOC)
    assert len(samples) == 14 + 6 + 1 + 1
    main = [s for s in samples if s.main]
    assert {s.thread for s in main} == {"MainThread (100)"} and len(main) == 14
    assert {s.thread for s in samples if not s.main} == {"ThreadPoolExecutor-0_0 (101)", "ThreadPoolExecutor-0_1 (103)",
                                                        "loadprof-memory (102)"}
    first = main[0]
    assert first.stack[0] == Frame("<module>", W, 300) and first.stack[-1].function == "_find_and_load"
    assert first.weight_s == 0.01 and main[-1].stack == ()
    assert {s.state for s in samples} == {"running"} and {s.t_s for s in samples} == {None}
    # no names at all: the thread whose tid is the pid is the main one
    bare = {"shared": {"frames": [{"name": "f", "file": "/x.py", "line": 1}]},
            "profiles": [{"name": "Thread 7", "samples": [[0]], "weights": [0.01]},
                         {"name": "Thread 5", "samples": [[0]], "weights": [0.01]}]}
    assert [s.main for s in parse_speedscope(bare, pid=5)] == [False, True]
    assert [s.main for s in parse_speedscope(bare)] == [True, False]
    assert [s.thread for s in parse_speedscope(bare, pid=5)] == ["thread 7", "MainThread (5)"]
    assert parse_speedscope({"profiles": [], "shared": {"frames": []}}) == ()


def test_phase_paths_worker_split_and_unattributed():
    a = attribute(parse_speedscope(DOC), rate_hz=100)
    assert a["phase_source"] == "stack frames" and a["states_known"] is True
    ph = a["phases"]
    exact = {p: n["samples"] for p, n in ph.items() if n["samples"]}
    assert exact == {"import": 2, "load": 6, "load/weights/materialize": 2, "load/config": 1,
                     "load/instantiate": 1, "(unattributed)": 2}
    assert ph["load"]["seconds"] == 0.06 and ph["load"]["inclusive_s"] == 0.1
    assert ph["load/weights"] == {
        "seconds": 0.0, "samples": 0, "inclusive_s": 0.02, "running_s": 0.0, "waiting_s": 0.0, "waits": {},
        "unknown_state_s": 0.0, "cpu_wait_s": 0.0, "wall_s": None, "share_of_phase": None, "top": []}
    assert ph["import"] == {
        "seconds": 0.02, "samples": 2, "inclusive_s": 0.02, "running_s": 0.02, "waiting_s": 0.0, "waits": {},
        "unknown_state_s": 0.0, "cpu_wait_s": 0.0, "wall_s": None, "share_of_phase": None,
        "top": [{"function": "_find_and_load (<frozen importlib._bootstrap>:1176)", "state": "running",
                 "seconds": 0.02}]}
    assert ph["(unattributed)"]["top"] == [
        {"function": "model_facts (profiler/worker.py:80)", "state": "running", "seconds": 0.01},
        {"function": "(no Python stack)", "state": "running", "seconds": 0.01}]
    assert a["worker_threads"] == {
        "load/weights/materialize/read [worker threads]": {"seconds_summed_over_threads": 0.04, "threads": 2},
        "load/weights/materialize/convert [worker threads]": {"seconds_summed_over_threads": 0.02, "threads": 1},
        "load/weights/materialize [worker threads]": {"seconds_summed_over_threads": 0.01, "threads": 1},
        "(unattributed) [worker threads]": {"seconds_summed_over_threads": 0.01, "threads": 1},
    }
    assert (a["samples_total"], a["main_thread_samples"], a["main_thread_s"]) == (22, 14, 0.14)
    assert a["threads"][0] == {"thread": "MainThread (100)", "main": True, "seconds": 0.14, "samples": 14,
                               "running_s": 0.14, "waiting_s": 0.0, "waits": {}, "unknown_state_s": 0.0, "cpu_wait_s": 0.0}
    assert {t["thread"]: t["main"] for t in a["threads"]} == {
        "MainThread (100)": True, "ThreadPoolExecutor-0_0 (101)": False, "ThreadPoolExecutor-0_1 (103)": False,
        "loadprof-memory (102)": False}
    assert a["rate_hz"] == 100 and a["effective_rate_hz"] == 100.0  # 14 samples over 0.14 s
    assert a["materialize_lines"] == PINNED
    assert a["areas"]["load"] == {"torch ops": 0.05, "your code": 0.01, "python stdlib": 0.02, "transformers": 0.01,
                                  "model code": 0.01}


def test_materialize_split_on_main_thread_and_without_lines(monkeypatch):
    stack = FP + [("PreTrainedModel._load_pretrained_model", MU, 4100), ("convert_and_load_state_dict_in_model", CML, 9),
                  ("spawn_materialize.<locals>._job", CML, 1345), ("_materialize_copy", CML, CONV)]
    s = Sample("MainThread (1)", tuple(Frame(*f) for f in stack), 0.01, main=True)
    match = matcher(attribution.DEFAULT_PHASE_MAP)
    assert frame_path(s, match, PINNED) == "load/weights/materialize/convert"
    assert frame_path(s, match, {}) == "load/weights/materialize"
    worker = Sample("t (2)", tuple(Frame(*f) for f in POOL + [("_materialize_copy", CML, READ)]), 0.01)
    assert frame_path(worker, match, PINNED) == "load/weights/materialize/read [worker threads]"
    assert frame_path(Sample("t (2)", (), 0.01), match, PINNED) == "(unattributed) [worker threads]"
    # a read/convert line outside the materialize job does not split anything
    stray = Sample("MainThread (1)", (Frame("step_load", W, 1), Frame("_materialize_copy_like", CML, READ)), 0.01, True)
    assert frame_path(stray, match, PINNED) == "load"
    monkeypatch.setattr(attribution, "materialize_lines", lambda: {})
    a = attribute(parse_speedscope(DOC))
    assert a["worker_threads"]["load/weights/materialize [worker threads]"] == {
        "seconds_summed_over_threads": 0.07, "threads": 2}
    assert a["materialize_lines"] == {} and a["rate_hz"] is None


def test_top_functions_by_leaf_seconds():
    a = attribute(parse_speedscope(DOC), rate_hz=100)
    main = a["top_functions"]["main_thread"]
    assert [(f["name"], f["samples"]) for f in main] == [
        ("Module.named_modules", 5), ("Condition.wait", 2), ("_find_and_load", 2), ("PreTrainedConfig.from_pretrained", 1),
        ("Qwen2ForCausalLM.__init__", 1), ("check_one", 1), ("model_facts", 1)]
    first = main[0]
    assert first == {"function": "Module.named_modules (torch/nn/module.py:5)", "name": "Module.named_modules",
                     "file": f"{SP}/torch/nn/module.py", "line": 5, "seconds": 0.05, "samples": 5, "running_s": 0.05,
                     "waiting_s": 0.0, "waits": {}, "unknown_state_s": 0.0, "cpu_wait_s": 0.0, "share": round(5 / 14, 6)}
    top = {f["name"]: f for f in main}
    assert "run_trial" not in top and "ModelManager.validate" not in top  # never a leaf
    assert top["Condition.wait"]["share"] == round(2 / 14, 6) and top["Condition.wait"]["seconds"] == 0.02
    everything = {f["name"]: f for f in a["top_functions"]["all_threads"]}
    assert everything["_materialize_copy"]["samples"] == 6 and everything["_materialize_copy"]["seconds"] == 0.06
    assert everything["_materialize_copy"]["share"] == pytest.approx(6 / 22, abs=1e-6)
    assert a["top_functions"]["all_threads"][0]["name"] == "_materialize_copy"
    assert len(attribute(parse_speedscope(DOC), top_n=3)["top_functions"]["all_threads"]) == 3


def test_user_functions_rank_by_own_time_with_nested_call():
    users = attribute(parse_speedscope(DOC), rate_hz=100)["user_functions"]
    # ModelManager.load's 4 samples all sit inside transformers' phases (from_pretrained): no own time, so the
    # function with one sample of its own work ranks above it
    assert [(u["name"], u["phase"], u["samples"], u["seconds"], u["own_s"], u["inclusive_s"]) for u in users] == [
        ("ModelManager.validate", "load", 5, 0.05, 0.05, 0.06), ("check_one", "load", 1, 0.01, 0.01, 0.01),
        ("ModelManager.load", "load", 4, 0.04, 0.0, 0.1)]
    v = users[0]
    assert v["file"] == USER and v["line"] == 30 and v["hottest_line"] == 30  # file unreadable: smallest line seen
    assert (v["running_s"], v["waiting_s"], v["waits"], v["decode_s"]) == (0.05, 0.0, {}, 0.0)
    assert (v["share_of_phase"], v["own_share_of_phase"], v["share_of_decode"]) == (None, None, None)  # no walls
    assert len(attribute(parse_speedscope(DOC), top_n=1)["user_functions"]) == 1  # per top-level phase


def test_user_code_classification(tmp_path):
    stdlib = sysconfig.get_paths()["stdlib"]
    assert is_user_file("/home/u/mm/manager.py") and is_user_file(str(FIXTURE))
    assert is_user_file(str(ROOT / "strategies" / "examples" / "faulty_loaders.py"))
    for f in (f"{stdlib}/threading.py", f"{SP}/torch/nn/module.py", "/usr/lib/python3/dist-packages/x.py",
              str(ROOT / "strategies" / "loaders.py"), str(ROOT / "probes" / "phases.py"),
              str(ROOT / "profiler" / "worker.py"), str(ROOT / "reports" / "html.py"), "<frozen site>", "",
              "/home/u/.cache/huggingface/modules/transformers_modules/m/modeling_m.py"):
        assert not is_user_file(f), f
    src = tmp_path / "m.py"
    src.write_text("class A:\n    @staticmethod\n    def go(x):\n        y = 1\n        return y\n")
    assert def_line(str(src), "A.go", 5) == 3 and def_line(str(src), "<module>", 4) == 4
    assert def_line(str(tmp_path / "missing.py"), "f", 9) == 9


def test_real_materialize_lines_point_at_the_read_and_cast():
    cml = REAL_MATERIALIZE_LINES().get("transformers/core_model_loading.py")
    assert cml, "transformers' _materialize_copy not found"
    spec = importlib.util.find_spec("transformers")
    text = (Path(spec.submodule_search_locations[0]) / "core_model_loading.py").read_text().splitlines()
    assert "tensor[...]" in text[cml["read"] - 1] and ".to(" in text[cml["convert"] - 1]
    own = REAL_MATERIALIZE_LINES().get("probes/load_phases.py")
    assert own, "LoadPhasesProbe._timed_copy's read / convert lines not found"
    mine = (ROOT / "probes" / "load_phases.py").read_text().splitlines()
    assert "[...]" in mine[own["read"] - 1] and ".to(" in mine[own["convert"] - 1]


def test_module_does_not_import_torch():
    code = ("import sys, loadprof.probes.sampling, loadprof.probes.attribution as a; a.materialize_lines(); "
            "assert 'torch' not in sys.modules, 'torch'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=60)


# ---- Sampler: failures become reasons, never exceptions -------------------------------------------------------

def test_bogus_pid_gives_a_reason(tmp_path):
    s = Sampler(2**31 - 5, tmp_path)
    reason = s.start()
    assert reason and "no process" in reason
    res = s.finish(timeout_s=1)
    assert not res.ok and res.reason == reason and res.samples == ()
    assert res.to_probe_result().notes == (f"sampling not run: {reason}",)


def test_missing_py_spy_and_finish_without_start(tmp_path, monkeypatch):
    assert not Sampler(1, tmp_path).finish().ok
    monkeypatch.setattr(sampling, "find_py_spy", lambda: None)
    s = Sampler(1, tmp_path)
    assert "py-spy not found" in s.start() and "py-spy not found" in s.finish().reason


def test_command_records_every_thread_idle_ones_too(tmp_path):
    cmd = Sampler(42, tmp_path, rate_hz=50).command("py-spy")
    assert cmd[:4] == ["py-spy", "record", "--pid", "42"]
    for flag in ("--threads", "--idle", "--full-filenames", "--nonblocking"):
        assert flag in cmd
    assert cmd[cmd.index("--format") + 1] == "chrometrace" and cmd[cmd.index("--rate") + 1] == "50"
    assert "--nonblocking" not in Sampler(42, tmp_path, nonblocking=False).command("py-spy")


def test_with_attribution_keeps_samples_and_merges_notes():
    s = (Sample("MainThread (1)", (), 0.5, True),)
    res = sampling.SamplingResult(ok=True, profile_path="/x/p.json", log_path="/x/l.log", wall_s=1.0,
                                  notes=("a",), samples=s)
    out = res.with_attribution({"samples_total": 1, "notes": ["b", "a"]})
    assert out.samples == s and out.notes == ("a", "b", "a")
    pr = out.to_probe_result()
    assert pr.notes == ("a", "b") and pr.payload.ok is True and pr.payload.samples_total == 1
    assert pr.artifacts == {"py_spy_log": "py-spy.log", "speedscope": "profile.speedscope.json"}


def _attach_or_skip(sampler: Sampler, proc: subprocess.Popen) -> None:
    reason = sampler.start()
    if reason:
        proc.kill()
        proc.wait()
        pytest.skip(f"py-spy cannot sample here: {reason}")


def _skip_if_denied(res: sampling.SamplingResult) -> None:
    if not res.ok and re.search(r"ermission|ptrace|not permitted", res.reason or ""):
        pytest.skip(f"py-spy cannot sample here: {res.reason}")


LOADER = """\
import sys
import time

sys.path.insert(0, {fixture_dir!r})
import busy_load  # noqa: E402


def nap():
    time.sleep(1.0)


def step_load():
    busy_load.slow_validate()
    busy_load.quick()
    nap()


if __name__ == "__main__":
    time.sleep(0.3)  # lets py-spy attach first
    step_load()
"""


@pytest.mark.e2e
def test_real_py_spy_names_the_user_validation_loop_and_its_sleep(tmp_path):
    if sampling.find_py_spy() is None:
        pytest.skip("py-spy is not installed")
    script = tmp_path / "loader.py"
    script.write_text(LOADER.format(fixture_dir=str(FIXTURE.parent)))
    out = tmp_path / "trial"
    proc = subprocess.Popen([sys.executable, str(script)])
    sampler = Sampler(proc.pid, out, rate_hz=100)
    _attach_or_skip(sampler, proc)
    assert proc.wait(timeout=30) == 0
    res = sampler.finish(timeout_s=15)
    _skip_if_denied(res)
    assert res.ok, res.reason
    assert (out / "profile.speedscope.json").stat().st_size > 0 and (out / "py-spy.log").is_file()
    assert (out / "py-spy.trace.json").stat().st_size > 0
    assert res.samples and any(s.main for s in res.samples) and res.wall_s and res.wall_s > 2.5
    a = attribute(res.samples, rate_hz=100)
    assert a["states_known"], res.notes
    assert 2.2 < a["phases"]["load"]["inclusive_s"] < 4.0, a["phases"]  # 1.5 + 0.3 + 1.0 s
    users = {u["name"]: u for u in a["user_functions"] if u["phase"] == "load"}
    top = a["user_functions"][0]
    assert top["name"] == "slow_validate" and top["phase"] == "load", a["user_functions"][:3]
    assert 1.0 < top["own_s"] < 2.2 and top["running_s"] > 0.8 * top["seconds"], top
    src = FIXTURE.read_text().splitlines()
    assert top["file"] == str(FIXTURE) and src[top["line"] - 1].startswith("def slow_validate")
    assert top["line"] < top["hottest_line"] <= top["line"] + 5
    assert users["quick"]["own_s"] < top["own_s"]
    nap = users["nap"]  # time.sleep is C code: the wait is charged to the Python function that called it
    assert nap["file"] == str(script)
    assert 0.6 <= nap["waits"].get("sleep", 0.0) <= 1.6, nap
    assert nap["running_s"] < 0.2 and nap["waiting_s"] >= nap["waits"]["sleep"], nap
    assert a["areas"]["load"].get("waiting: sleep", 0.0) >= 0.6, a["areas"]["load"]
    pr = res.with_attribution(a).to_probe_result()
    assert pr.payload.ok and pr.payload.user_functions[0].name == "slow_validate"
    assert pr.artifacts == {"py_spy_log": "py-spy.log", "speedscope": "profile.speedscope.json"}


def test_finish_stops_a_py_spy_that_outlives_the_timeout(tmp_path):
    if sampling.find_py_spy() is None:
        pytest.skip("py-spy is not installed")
    busy = "import time\nt = time.time()\nwhile time.time() - t < 30: pass\n"
    proc = subprocess.Popen([sys.executable, "-c", busy])
    try:
        sampler = Sampler(proc.pid, tmp_path)
        _attach_or_skip(sampler, proc)
        time.sleep(0.6)
        res = sampler.finish(timeout_s=0.3)  # the target still runs: py-spy gets SIGINT and writes its file
    finally:
        proc.kill()
        proc.wait()
    _skip_if_denied(res)
    assert res.ok, res.reason
    assert any("SIGINT" in n for n in res.notes) and attribute(res.samples)["main_thread_samples"] > 0
