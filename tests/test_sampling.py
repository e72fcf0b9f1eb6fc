"""Sampling probe: speedscope parsing and attribution on hand-built profiles (exact), and a real py-spy run."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from loadprof.probes import sampling
from loadprof.probes.sampling import Frame, Sample, Sampler, attribute, is_user_file, parse_speedscope

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "sampling" / "busy_load.py"
ROOT = sampling.ROOT
W = str(ROOT / "profiler" / "worker.py")
LOADERS = str(ROOT / "strategies" / "loaders.py")
SP = "/venv/lib/python3.11/site-packages"
MU, CML = f"{SP}/transformers/modeling_utils.py", f"{SP}/transformers/core_model_loading.py"
AUTO, CFG = f"{SP}/transformers/models/auto/auto_factory.py", f"{SP}/transformers/configuration_utils.py"
THREADING = sampling.sysconfig.get_paths()["stdlib"] + "/threading.py"
USER = "/home/u/mm/manager.py"
READ, CONV, P_READ, P_CONV = 1321, 1323, 147, 150  # pinned via the fixture below, whatever is installed
REAL_MATERIALIZE_LINES = sampling.materialize_lines


@pytest.fixture(autouse=True)
def _pinned_lines(monkeypatch):
    monkeypatch.setattr(sampling, "materialize_lines", lambda: {
        "transformers/core_model_loading.py": {"read": READ, "convert": CONV},
        "probes/load_phases.py": {"read": P_READ, "convert": P_CONV}})


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
    ph = a["phases"]
    exact = {p: n["samples"] for p, n in ph.items() if n["samples"]}
    assert exact == {"import": 2, "load": 6, "load/weights/materialize": 2, "load/config": 1,
                     "load/instantiate": 1, "(unattributed)": 2}
    assert ph["load"]["inclusive_samples"] == 10 and ph["load/weights"] == {
        "samples": 0, "inclusive_samples": 2, "seconds": 0.0, "share_of_main": 0.0, "inclusive_s": 0.02,
        "inclusive_share_of_main": round(2 / 14, 6)}
    assert ph["import"]["seconds"] == 0.02 and ph["import"]["share_of_main"] == round(2 / 14, 6)
    assert a["worker_threads"] == {
        "load/weights/materialize/read [worker threads]": {"samples": 4, "busy_s_summed_over_threads": 0.04,
                                                           "threads": 2},
        "load/weights/materialize/convert [worker threads]": {"samples": 2, "busy_s_summed_over_threads": 0.02,
                                                              "threads": 1},
        "load/weights/materialize [worker threads]": {"samples": 1, "busy_s_summed_over_threads": 0.01, "threads": 1},
        "(unattributed) [worker threads]": {"samples": 1, "busy_s_summed_over_threads": 0.01, "threads": 1},
    }
    assert (a["samples_total"], a["main_thread_samples"], a["load_samples"]) == (22, 14, 10)
    assert a["threads"][0] == {"thread": "MainThread (100)", "main": True, "samples": 14, "sampled_s": 0.14}
    assert a["interval_s"] == 0.01 and a["rate_hz"] == 100


def test_materialize_split_on_main_thread_and_without_lines(monkeypatch):
    stack = FP + [("PreTrainedModel._load_pretrained_model", MU, 4100), ("convert_and_load_state_dict_in_model", CML, 9),
                  ("spawn_materialize.<locals>._job", CML, 1345), ("_materialize_copy", CML, CONV)]
    s = Sample("MainThread (1)", tuple(Frame(*f) for f in stack), 0.01, main=True)
    assert sampling.phase_path(s, sampling.matcher(sampling.DEFAULT_PHASE_MAP), sampling.materialize_lines()) \
        == "load/weights/materialize/convert"
    monkeypatch.setattr(sampling, "materialize_lines", lambda: {})
    a = attribute(parse_speedscope(DOC))
    assert a["worker_threads"]["load/weights/materialize [worker threads]"]["samples"] == 7
    assert any("not split" in n for n in a["notes"]) and a["interval_s"] == 0.01  # interval from the weights


def test_top_functions_self_vs_inclusive():
    a = attribute(parse_speedscope(DOC), rate_hz=100)
    top = {f["name"]: f for f in a["top_functions"]["main_thread"]}
    first = a["top_functions"]["main_thread"][0]
    assert first["name"] == "Module.named_modules" and first["self_samples"] == 5 and first["inclusive_samples"] == 5
    assert first["function"] == "Module.named_modules (torch/nn/module.py:5)"
    assert (top["run_trial"]["self_samples"], top["run_trial"]["inclusive_samples"]) == (0, 13)
    assert top["ModelManager.validate"]["inclusive_samples"] == 6 and top["ModelManager.validate"]["self_samples"] == 0
    assert top["Condition.wait"]["self_share"] == round(2 / 14, 6)
    everything = {f["name"]: f for f in a["top_functions"]["all_threads"]}
    assert everything["_materialize_copy"]["self_samples"] == 6
    assert everything["_materialize_copy"]["self_share"] == round(6 / 22, 6)
    assert len(attribute(parse_speedscope(DOC), top_n=3)["top_functions"]["all_threads"]) == 3


def test_user_functions_rank_by_own_time_then_self_user_with_nested_call():
    users = attribute(parse_speedscope(DOC), rate_hz=100)["user_functions"]
    # ModelManager.load's 4 self samples all sit inside transformers' phases (from_pretrained): no own time,
    # so the function with one sample of its own work ranks above it
    assert [(u["name"], u["own_samples"], u["self_user_samples"], u["inclusive_samples"]) for u in users] == [
        ("ModelManager.validate", 5, 5, 6), ("check_one", 1, 1, 1), ("ModelManager.load", 0, 4, 10)]
    v = users[0]
    assert v["file"] == USER and v["line"] == 30 and v["hottest_line"] == 30  # file unreadable: smallest line seen
    assert v["share_of_load"] == 0.5 and v["self_user_s"] == 0.05 and v["inclusive_share_of_load"] == 0.6


def test_user_code_classification(tmp_path):
    stdlib = sampling.sysconfig.get_paths()["stdlib"]
    assert is_user_file("/home/u/mm/manager.py") and is_user_file(str(FIXTURE))
    assert is_user_file(str(ROOT / "strategies" / "examples" / "faulty_loaders.py"))
    for f in (f"{stdlib}/threading.py", f"{SP}/torch/nn/module.py", "/usr/lib/python3/dist-packages/x.py",
              str(ROOT / "strategies" / "loaders.py"), str(ROOT / "probes" / "phases.py"),
              str(ROOT / "profiler" / "worker.py"), str(ROOT / "reports" / "html.py"), "<frozen site>", ""):
        assert not is_user_file(f), f
    src = tmp_path / "m.py"
    src.write_text("class A:\n    @staticmethod\n    def go(x):\n        y = 1\n        return y\n")
    assert sampling.def_line(str(src), "A.go", 5) == 3 and sampling.def_line(str(src), "<module>", 4) == 4
    assert sampling.def_line(str(tmp_path / "missing.py"), "f", 9) == 9


def test_real_materialize_lines_point_at_the_read_and_cast():
    cml = REAL_MATERIALIZE_LINES().get("transformers/core_model_loading.py")
    assert cml, "transformers' _materialize_copy not found"
    spec = sampling.importlib.util.find_spec("transformers")
    text = (Path(spec.submodule_search_locations[0]) / "core_model_loading.py").read_text().splitlines()
    assert "tensor[...]" in text[cml["read"] - 1] and ".to(" in text[cml["convert"] - 1]


def test_module_does_not_import_torch():
    code = "import sys, loadprof.probes.sampling as s; s.materialize_lines(); assert 'torch' not in sys.modules, 'torch'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=60)


# ---- Sampler: failures become reasons, never exceptions -------------------------------------------------------

def test_bogus_pid_gives_a_reason(tmp_path):
    s = Sampler(2**31 - 5, tmp_path)
    reason = s.start()
    assert reason and "no process" in reason
    res = s.finish(timeout_s=1)
    assert not res.ok and res.reason == reason
    assert res.to_probe_result().notes == (f"sampling not run: {reason}",)


def test_missing_py_spy_and_finish_without_start(tmp_path, monkeypatch):
    assert not Sampler(1, tmp_path).finish().ok
    monkeypatch.setattr(sampling, "find_py_spy", lambda: None)
    s = Sampler(1, tmp_path)
    assert "py-spy not found" in s.start() and "py-spy not found" in s.finish().reason


def _attach_or_skip(sampler: Sampler, proc: subprocess.Popen) -> None:
    reason = sampler.start()
    if reason:
        proc.kill()
        proc.wait()
        pytest.skip(f"py-spy cannot sample here: {reason}")


def _skip_if_denied(res: sampling.SamplingResult) -> None:
    if not res.ok and re.search(r"ermission|ptrace|not permitted", res.reason or ""):
        pytest.skip(f"py-spy cannot sample here: {res.reason}")


def test_real_py_spy_names_the_user_validation_loop(tmp_path):
    if sampling.find_py_spy() is None:
        pytest.skip("py-spy is not installed")
    proc = subprocess.Popen([sys.executable, str(FIXTURE), "0.3"])
    sampler = Sampler(proc.pid, tmp_path, rate_hz=100)
    _attach_or_skip(sampler, proc)
    assert proc.wait(timeout=30) == 0
    res = sampler.finish(timeout_s=15)
    _skip_if_denied(res)
    assert res.ok, res.reason
    assert (tmp_path / "profile.speedscope.json").stat().st_size > 0 and (tmp_path / "py-spy.log").is_file()
    a = res.attribution
    assert a["phases"]["load"]["inclusive_samples"] >= 100  # ~1.8 s at 100 Hz
    top = a["user_functions"][0]
    assert top["name"] == "slow_validate" and top["share_of_load"] > 0.6, a["user_functions"][:3]
    src = FIXTURE.read_text().splitlines()
    assert top["file"] == str(FIXTURE) and src[top["line"] - 1].startswith("def slow_validate")
    assert top["line"] < top["hottest_line"] <= top["line"] + 5
    quick = next(u for u in a["user_functions"] if u["name"] == "quick")
    assert quick["self_user_samples"] < top["self_user_samples"]
    assert res.to_dict()["ok"] and res.wall_s and res.wall_s > 1.5
    pr = res.to_probe_result()
    assert pr.artifacts == {"py_spy_log": "py-spy.log", "speedscope": "profile.speedscope.json"}
    assert pr.metrics["user_functions"][0]["name"] == "slow_validate"


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
    assert any("SIGINT" in n for n in res.notes) and res.attribution["main_thread_samples"] > 0
