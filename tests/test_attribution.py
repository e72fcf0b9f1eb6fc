"""Attribution on the trial's clock: samples with times and thread states against a hand-built phase tree.
Weights are binary fractions of a second, so every figure below is exact."""

from __future__ import annotations

import pytest

from loadprof.core.phases import PhaseTiming
from loadprof.probes import attribution
from loadprof.probes.attribution import (DEFAULT_PHASE_MAP, attribute, frame_path, matcher, phase_walls,
                                         sample_path, time_path)
from loadprof.probes.stacks import Frame, Sample

SP = "/venv/lib/python3.11/site-packages"
USER = "/home/u/proc.py"
MU, CFG = f"{SP}/transformers/modeling_utils.py", f"{SP}/transformers/configuration_utils.py"
CML = f"{SP}/transformers/core_model_loading.py"
GEN, LOGITS = f"{SP}/transformers/generation/utils.py", f"{SP}/transformers/generation/logits_process.py"
MODEL, TORCH = f"{SP}/transformers/models/qwen2/modeling_qwen2.py", f"{SP}/torch/nn/modules/linear.py"
READ, CONV = 1321, 1323
PINNED = {"transformers/core_model_loading.py": {"read": READ, "convert": CONV}}


@pytest.fixture(autouse=True)
def _pinned_lines(monkeypatch):
    monkeypatch.setattr(attribution, "materialize_lines", lambda: PINNED)


#  import [0, 1)   load [1, 3): config [1, 1.5), weights [2, 3): materialize [2.25, 2.75)
#  generate [4, 8): prefill [4, 4.5), decode [4.5, 5.5), finish [5.5, 5.75), prefill [6, 6.5), decode [6.5, 7.5)
PHASES = (
    PhaseTiming("import", 0.0, 1.0),
    PhaseTiming("load", 1.0, 3.0, (
        PhaseTiming("config", 1.0, 1.5),
        PhaseTiming("weights", 2.0, 3.0, (PhaseTiming("materialize", 2.25, 2.75),)))),
    PhaseTiming("generate", 4.0, 8.0, (
        PhaseTiming("prefill", 4.0, 4.5), PhaseTiming("decode", 4.5, 5.5), PhaseTiming("finish", 5.5, 5.75),
        PhaseTiming("prefill", 6.0, 6.5), PhaseTiming("decode", 6.5, 7.5))),
)

LOAD_MODEL = Frame("load_model", USER, 10)
FROM_PRETRAINED = Frame("PreTrainedModel.from_pretrained", MU, 4000)
CONFIG = Frame("PreTrainedConfig.from_pretrained", CFG, 600)
LINEAR = Frame("Linear.forward", TORCH, 120)
ARGMAX = Frame("argmax_helper", f"{SP}/torch/functional.py", 30)
RUN_GEN = Frame("run_gen", USER, 50)
GENERATE = Frame("GenerationMixin.generate", GEN, 2000)
SAMPLE = Frame("GenerationMixin._sample", GEN, 2500)
LPS = Frame("LogitsProcessorList.__call__", LOGITS, 90)
PROC = Frame("MyProc.__call__", USER, 30)
WRAPPER = Frame("wrapped_forward", USER, 70)
FORWARD = Frame("Qwen2ForCausalLM.forward", MODEL, 400)
IMPORT = Frame("_find_and_load", "<frozen importlib._bootstrap>", 1176)
POOL = (Frame("Thread.run", "/usr/lib/python3.11/threading.py", 982), Frame("spawn_materialize.<locals>._job", CML, 1345))


def main(t: float, stack: tuple[Frame, ...], w: float, state: str = "running") -> Sample:
    return Sample("MainThread (1)", stack, w, True, state, t)


def worker(name: str, t: float, stack: tuple[Frame, ...], w: float, state: str = "running") -> Sample:
    return Sample(name, stack, w, False, state, t)


SAMPLES = [
    main(0.5, (IMPORT,), 0.25),                                              # import
    main(1.25, (LOAD_MODEL, FROM_PRETRAINED), 0.25),                         # load/config
    main(1.4, (LOAD_MODEL, FROM_PRETRAINED, CONFIG), 0.5),                   # load/config (over its 0.5 s wall)
    main(1.75, (LOAD_MODEL,), 0.5),                                          # load: the user's own work
    main(1.9, (LOAD_MODEL,), 0.25, "sleep"),                                 # load: the user's own sleep
    main(2.1, (LOAD_MODEL, FROM_PRETRAINED), 0.125, "lock"),                 # load/weights
    main(2.5, (LOAD_MODEL, FROM_PRETRAINED, LINEAR), 0.125),                 # load/weights/materialize
    main(3.5, (), 0.25),                                                     # between phases: unattributed
    main(4.25, (RUN_GEN, GENERATE, FORWARD, LINEAR), 0.25),                  # generate/prefill
    main(5.0, (RUN_GEN, GENERATE, SAMPLE, LPS, PROC), 0.5),                  # decode: a logits processor's own work
    main(5.25, (RUN_GEN, GENERATE, SAMPLE, LPS, PROC), 0.125, "gil"),        # decode: ... waiting for the GIL
    main(7.0, (RUN_GEN, GENERATE, SAMPLE, LPS, PROC, ARGMAX), 0.25),         # decode: torch under it still counts
    main(7.25, (RUN_GEN, GENERATE, SAMPLE, WRAPPER, FORWARD, LINEAR), 0.5),  # decode: the model under a wrapper
    main(5.75, (RUN_GEN,), 0.25),                                            # generate, outside its steps
    worker("pool (2)", 2.5, POOL + (Frame("_materialize_copy", CML, READ),), 0.25, "lock"),
    worker("pool (3)", 2.5, POOL + (Frame("_materialize_copy", CML, CONV),), 0.25),
    worker("pool (2)", 9.0, POOL, 0.125),
]


def test_time_path_deepest_open_phase():
    assert time_path(0.5, PHASES) == "import"
    assert time_path(1.0, PHASES) == "load/config"  # a phase is open from its start
    assert time_path(1.25, PHASES) == "load/config"
    assert time_path(1.75, PHASES) == "load"  # between children: the parent
    assert time_path(2.0, PHASES) == "load/weights"
    assert time_path(2.5, PHASES) == "load/weights/materialize"
    assert time_path(2.75, PHASES) == "load/weights"  # ... and closed at its end
    assert time_path(7.0, PHASES) == "generate/decode" and time_path(5.9, PHASES) == "generate"
    for outside in (-1.0, 3.0, 3.5, 8.0, 100.0):
        assert time_path(outside, PHASES) is None, outside
    assert time_path(1.0, ()) is None


def test_sample_path_worker_suffix_materialize_split_and_fallback():
    match = matcher(DEFAULT_PHASE_MAP)
    read = POOL + (Frame("_materialize_copy", CML, READ),)
    assert sample_path(main(2.5, read, 0.01), PHASES, match, PINNED) == "load/weights/materialize/read"
    assert sample_path(main(2.5, read, 0.01), PHASES, match, {}) == "load/weights/materialize"
    assert sample_path(worker("p (2)", 2.5, read, 0.01), PHASES, match, PINNED) == \
        "load/weights/materialize/read [worker threads]"
    # the time decides, not the stack: a read line outside the materialize phase is not split
    assert sample_path(worker("p (2)", 2.1, read, 0.01), PHASES, match, PINNED) == "load/weights [worker threads]"
    assert sample_path(worker("p (2)", 3.5, read, 0.01), PHASES, match, PINNED) == "(unattributed) [worker threads]"
    assert sample_path(main(3.5, (), 0.01), PHASES, match, PINNED) == "(unattributed)"
    # no time, or no phase tree: the stack's frames decide
    untimed = Sample("MainThread (1)", (Frame("step_load", "/w.py", 1), LOAD_MODEL), 0.01, True)
    assert sample_path(untimed, PHASES, match, PINNED) == frame_path(untimed, match, PINNED) == "load"
    assert sample_path(main(7.0, (Frame("step_load", "/w.py", 1),), 0.01), (), match, PINNED) == "load"


def test_phase_walls_sum_repeated_names():
    assert phase_walls(PHASES) == {
        "import": 1.0, "load": 2.0, "load/config": 0.5, "load/weights": 1.0, "load/weights/materialize": 0.5,
        "generate": 4.0, "generate/prefill": 1.0, "generate/decode": 2.0, "generate/finish": 0.25}
    assert phase_walls(()) == {}
    twice = (PhaseTiming("generate", 0.0, 1.0), PhaseTiming("generate", 2.0, 2.5))
    assert phase_walls(twice) == {"generate": 1.5}


def test_attribute_summary_threads_and_workers():
    a = attribute(SAMPLES, PHASES, rate_hz=100)
    assert a["phase_source"] == "phase tree (time)" and a["states_known"] is True and a["rate_hz"] == 100
    assert (a["samples_total"], a["main_thread_samples"], a["main_thread_s"]) == (17, 14, 4.125)
    assert a["effective_rate_hz"] == round(14 / 4.125, 6)
    assert a["threads"] == [
        {"thread": "MainThread (1)", "main": True, "seconds": 4.125, "samples": 14, "running_s": 3.625,
         "waiting_s": 0.5, "waits": {"sleep": 0.25, "lock": 0.125, "gil": 0.125}, "unknown_state_s": 0.0, "cpu_wait_s": 0.0},
        {"thread": "pool (2)", "main": False, "seconds": 0.375, "samples": 2, "running_s": 0.125, "waiting_s": 0.25,
         "waits": {"lock": 0.25}, "unknown_state_s": 0.0, "cpu_wait_s": 0.0},
        {"thread": "pool (3)", "main": False, "seconds": 0.25, "samples": 1, "running_s": 0.25, "waiting_s": 0.0,
         "waits": {}, "unknown_state_s": 0.0, "cpu_wait_s": 0.0}]
    assert a["worker_threads"] == {
        "(unattributed) [worker threads]": {"seconds_summed_over_threads": 0.125, "threads": 1},
        "load/weights/materialize/convert [worker threads]": {"seconds_summed_over_threads": 0.25, "threads": 1},
        "load/weights/materialize/read [worker threads]": {"seconds_summed_over_threads": 0.25, "threads": 1}}
    assert a["notes"] == ["worker-thread seconds are summed over threads and overlap the main thread's time"]
    assert a["materialize_lines"] == PINNED


def test_attribute_phases_waits_and_capped_share():
    ph = attribute(SAMPLES, PHASES)["phases"]
    assert set(ph) == {"import", "load", "load/config", "load/weights", "load/weights/materialize", "(unattributed)",
                       "generate", "generate/prefill", "generate/decode"}
    assert ph["load"] == {
        "seconds": 0.75, "samples": 2, "inclusive_s": 1.75, "running_s": 0.5, "waiting_s": 0.25,
        "waits": {"sleep": 0.25}, "unknown_state_s": 0.0, "cpu_wait_s": 0.0, "wall_s": 2.0, "share_of_phase": 0.375,
        "top": [{"function": "load_model (/home/u/proc.py:10)", "state": "running", "seconds": 0.5},
                {"function": "load_model (/home/u/proc.py:10)", "state": "sleep", "seconds": 0.25}]}
    # 0.75 s of readings in a 0.5 s phase (a reading's weight is the gap before it): capped at the whole phase
    assert ph["load/config"]["seconds"] == 0.75 and ph["load/config"]["share_of_phase"] == 1.0
    assert (ph["load/weights"]["seconds"], ph["load/weights"]["inclusive_s"], ph["load/weights"]["waits"],
            ph["load/weights"]["share_of_phase"]) == (0.125, 0.25, {"lock": 0.125}, 0.125)
    assert ph["load/weights/materialize"]["share_of_phase"] == 0.25
    assert ph["generate/decode"]["seconds"] == 1.375 and ph["generate/decode"]["waits"] == {"gil": 0.125}
    assert ph["generate/decode"]["wall_s"] == 2.0 and ph["generate/decode"]["share_of_phase"] == 0.6875
    assert ph["generate"]["seconds"] == 0.25 and ph["generate"]["inclusive_s"] == 1.875
    assert ph["(unattributed)"]["wall_s"] is None and ph["(unattributed)"]["share_of_phase"] is None
    assert ph["(unattributed)"]["top"] == [{"function": "(no Python stack)", "state": "running", "seconds": 0.25}]
    assert ph["import"]["share_of_phase"] == 0.25


def test_attribute_areas():
    areas = attribute(SAMPLES, PHASES)["areas"]
    assert areas["load"] == {"transformers": 0.75, "your code": 0.5, "waiting: sleep": 0.25, "torch ops": 0.125,
                             "waiting: lock": 0.125}
    assert areas["generate"] == {"torch ops": 1.0, "your code": 0.75, "waiting: gil": 0.125}
    assert areas["generate/decode"] == {"torch ops": 0.75, "your code": 0.5, "waiting: gil": 0.125}
    assert areas["generate/prefill"] == {"torch ops": 0.25}
    assert areas["(unattributed)"] == {"native / not sampled": 0.25}
    assert areas["import"] == {"other libraries": 0.25}
    assert set(areas) == {"import", "load", "(unattributed)", "generate", "generate/decode", "generate/prefill"}


def test_run_queue_time_is_neither_running_nor_a_wait_of_the_code():
    """A reading whose gap the run queue held in part (another process on the CPU): that part is cpu_wait_s, kept
    out of running and of the waits, for the phase, the user's function, its call and the areas."""
    busy = [Sample("MainThread (1)", (LOAD_MODEL,), 0.5, True, "running", 1.75, cpu_wait_s=0.375),
            Sample("MainThread (1)", (LOAD_MODEL,), 0.25, True, "sleep", 1.9)]
    out = attribute(busy, PHASES)
    (u,) = [u for u in out["user_functions"] if u["phase"] == "load"]
    assert (u["seconds"], u["running_s"], u["cpu_wait_s"], u["waiting_s"]) == (0.75, 0.125, 0.375, 0.25)
    assert u["waits"] == {"sleep": 0.25} and u["callees"][0]["cpu_wait_s"] == 0.375
    assert u["callees"][0]["running_s"] == 0.125
    assert out["areas"]["load"]["waiting: cpu (another process)"] == 0.375
    assert out["phases"]["load"]["cpu_wait_s"] == 0.375 and out["phases"]["load"]["running_s"] == 0.125


def test_attribute_user_functions_own_and_decode_time():
    users = attribute(SAMPLES, PHASES)["user_functions"]
    assert [(u["name"], u["phase"]) for u in users] == [
        ("load_model", "load"), ("run_gen", "generate"), ("MyProc.__call__", "generate"),
        ("wrapped_forward", "generate")]
    load_model, run_gen, proc, wrapper = users
    calls = {(c["name"], c["line"]): (c["seconds"], c["own_s"]) for c in load_model.pop("callees")}
    # from_pretrained from line 10 (config, weights, materialize) and the user's own lines (no such file: no call)
    assert calls == {("PreTrainedModel.from_pretrained", 10): (1.0, 0.0), ("(own code)", 10): (0.75, 0.75)}
    assert load_model == {
        "name": "load_model", "file": USER, "line": 10, "phase": "load", "samples": 6, "seconds": 1.75,
        "running_s": 1.375, "waiting_s": 0.375, "waits": {"sleep": 0.25, "lock": 0.125}, "unknown_state_s": 0.0, "cpu_wait_s": 0.0,
        "own_s": 0.75,  # only the samples at exactly 'load': not config's, weights' or materialize's
        "inclusive_s": 1.75, "decode_s": 0.0, "share_of_phase": 0.875, "own_share_of_phase": 0.375,
        "share_of_decode": None, "hottest_line": 10}
    # the processor's own work in decode, torch under it included: 0.5 + 0.125 + 0.25 of 2 s of decode
    assert (proc["seconds"], proc["own_s"], proc["decode_s"], proc["share_of_decode"]) == (0.875, 0.0, 0.875, 0.4375)
    assert (proc["running_s"], proc["waits"], proc["share_of_phase"], proc["line"]) == (0.75, {"gil": 0.125}, 0.21875, 30)
    # a wrapper with transformers' forward under it: its time is the model's, not decode overhead
    assert (wrapper["seconds"], wrapper["decode_s"], wrapper["share_of_decode"]) == (0.5, 0.0, None)
    # run_gen: deepest user frame in prefill (0.25) and in generate itself (0.25, its own); above everything else
    assert (run_gen["seconds"], run_gen["own_s"], run_gen["decode_s"], run_gen["inclusive_s"]) == (0.5, 0.25, 0.0, 1.875)
    assert run_gen["own_share_of_phase"] == 0.0625
    top1 = attribute(SAMPLES, PHASES, top_n=1)["user_functions"]
    assert [(u["name"], u["phase"]) for u in top1] == [("load_model", "load"), ("run_gen", "generate")]


def test_attribute_top_functions():
    top = attribute(SAMPLES, PHASES)["top_functions"]
    main = top["main_thread"]
    assert [(f["name"], f["seconds"]) for f in main[:3]] == [
        ("Linear.forward", 0.875), ("load_model", 0.75), ("MyProc.__call__", 0.625)]
    assert main[0]["function"] == "Linear.forward (torch/nn/modules/linear.py:120)"
    assert main[0]["share"] == round(0.875 / 4.125, 6) and main[0]["samples"] == 3
    assert main[1]["waits"] == {"sleep": 0.25} and main[1]["running_s"] == 0.5
    assert top["all_threads"][0]["name"] == "Linear.forward"
    assert {f["name"]: f["seconds"] for f in top["all_threads"]}["_materialize_copy"] == 0.5


def test_attribute_without_states_or_main_thread():
    s = [Sample("pool (2)", (LOAD_MODEL,), 0.25, False, "unknown", 1.75)]
    a = attribute(s, PHASES)
    assert a["states_known"] is False and a["main_thread_samples"] == 0 and a["effective_rate_hz"] is None
    assert any("thread states were not read" in n for n in a["notes"])
    assert "no main thread identified" in a["notes"]
    assert a["phases"] == {} and a["user_functions"] == [] and a["worker_threads"] == {
        "load [worker threads]": {"seconds_summed_over_threads": 0.25, "threads": 1}}
    assert a["threads"][0]["unknown_state_s"] == 0.25
    empty = attribute([], PHASES)
    assert empty["samples_total"] == 0 and empty["phase_source"] == "stack frames"
    assert "no main thread identified" not in empty["notes"]


def test_share_of_decode_is_of_its_own_phase_decode_wall():
    phases = (PhaseTiming("warmup", 0.0, 2.0, (PhaseTiming("decode", 0.5, 1.5),)),
              PhaseTiming("generate", 2.0, 4.0, (PhaseTiming("decode", 2.5, 3.5),)))
    users = attribute([main(3.0, (PROC,), 0.5)], phases)["user_functions"]
    assert [(u["phase"], u["decode_s"]) for u in users] == [("generate", 0.5)]
    assert users[0]["share_of_decode"] == 0.5  # 0.5 s of generate's 1 s of decode, not warmup's


def test_area_of_library_paths():
    assert attribution.area_of(f"{SP}/torch/nn/modules/linear.py", False) == "torch ops"
    assert attribution.area_of(f"{SP}/transformers/generation/logits_process.py", False) == "logits processing"
    assert attribution.area_of(USER, True) == "your code" and attribution.area_of("", False) == "native / not sampled"
    assert attribution.area_of(str(attribution.ROOT / "probes" / "memory.py"), False) == "loadprof"


def test_area_of_a_venv_inside_the_checkout():
    venv_torch = str(attribution.ROOT / ".venv" / "lib" / "python3.11" / "site-packages" / "torch" / "nn" / "linear.py")
    assert not attribution.is_user_file(venv_torch)
    assert attribution.area_of(venv_torch, False) == "torch ops"  # returns "loadprof"


def test_a_garbled_frame_from_a_torn_read_never_breaks_attribution():
    """py-spy's nonblocking reads can tear a stack: a file name with a NUL byte must not raise."""
    bad = Frame("f", "/home/u/x\x00y.py", 3)
    assert not attribution.is_user_file(bad.file) and attribution.def_line(bad.file, "f", 3) == 3
    out = attribute([Sample("MainThread (1)", (bad,), 0.5, True, "running", 0.1)], ())
    assert out["main_thread_s"] == 0.5
