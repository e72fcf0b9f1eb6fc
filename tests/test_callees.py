"""The call breakdown inside a user function (loadprof.probes.callees) and the memory join
(loadprof.probes.memjoin), on synthetic samples, source files and memory timelines: exact figures."""

from __future__ import annotations

import json
from pathlib import Path

from loadprof.core.payloads import SamplingPayload
from loadprof.core.phases import PhaseTiming
from loadprof.probes import callees, memjoin
from loadprof.probes.attribution import attribute
from loadprof.probes.stacks import Frame, Sample

SP = "/venv/lib/python3.11/site-packages"
STDLIB = callees.sysconfig.get_paths()["stdlib"]
AUTO = Frame("_BaseAutoModelClass.from_config", f"{SP}/transformers/models/auto/auto_factory.py", 400)
INIT = Frame("PreTrainedModel._init_weights", f"{SP}/transformers/modeling_utils.py", 2000)
DEEPCOPY = Frame("deepcopy", f"{STDLIB}/copy.py", 128)
HOOK = Frame("wrapper", str(callees.Path(callees.__file__).resolve().parent / "_hooks.py"), 50)
CTX = Frame("decorate_context", f"{SP}/torch/utils/_contextlib.py", 116)
SOURCE = """class ModelManager:
    def load(self, path):
        model = AutoModelForCausalLM.from_config(cfg)
        self.backup = {k: v.clone() for k, v in model.state_dict().items()}
        self.copy = copy.deepcopy(model)
        for _ in range(10):
            gc.collect()
        total = sum(range(10))
"""
PHASES = (PhaseTiming("load", 0.0, 2.0),)


def manager(tmp_path: Path, line: int) -> Frame:
    src = tmp_path / "manager.py"
    src.write_text(SOURCE)
    return Frame("ModelManager.load", str(src), line)


def at(t: float, *stack: Frame, w: float = 0.125, state: str = "running") -> Sample:
    return Sample("MainThread (1)", stack, w, True, state, t)


def test_module_and_public_names():
    assert callees.module_of(f"{SP}/torch/nn/modules/module.py") == "torch.nn.modules.module"
    assert callees.module_of(f"{SP}/transformers/__init__.py") == "transformers"
    assert callees.module_of(f"{STDLIB}/shutil.py") == "shutil"
    assert callees.public_name(AUTO) == ("AutoModel.from_config", "transformers.models.auto.auto_factory")
    assert callees.public_name(DEEPCOPY)[0] == "copy.deepcopy"
    assert callees.public_name(Frame("copytree", f"{STDLIB}/shutil.py", 9))[0] == "shutil.copytree"
    # no table entry: module + qualname as py-spy reports it
    assert callees.public_name(Frame("Foo._bar", f"{SP}/lib/x.py", 1))[0] == "lib.x.Foo._bar"


def test_source_calls_name_c_functions_off_the_users_line(tmp_path):
    f = manager(tmp_path, 0)
    assert callees.source_call(f.file, 4)[0] == "torch.Tensor.clone"  # a comprehension's items() is not it
    assert callees.source_call(f.file, 7) == ("gc.collect", "gc.collect()")
    assert callees.source_call(f.file, 8)[0] == "sum"  # unknown: the line's outermost call
    assert callees.source_call(f.file, 99) == (callees.OWN, "")
    assert callees.source_call(str(tmp_path / "missing.py"), 3) == (callees.OWN, "")


def test_callee_is_the_outermost_library_frame_past_hooks_and_decorators(tmp_path):
    user = manager(tmp_path, 3)
    is_user = lambda f: f.endswith("manager.py")  # noqa: E731
    internal = lambda f: f == HOOK.file  # noqa: E731
    assert callees.callee_of((user, HOOK, CTX, AUTO, INIT), 0, is_user, internal)[:1] == ("AutoModel.from_config",)
    # loadprof's hook alone under the user's frame: no library call sampled, the user's line names it
    assert callees.callee_of((user, HOOK), 0, is_user, internal) == ("AutoModelForCausalLM.from_config", "", "line")
    # a C call: the leaf is the user's frame, so its line names it
    assert callees.callee_of((manager(tmp_path, 7),), 0, is_user, internal) == ("gc.collect", "", "line")


def test_breakdown_per_call_and_line_with_shares_and_states(tmp_path):
    samples = [at(0.125 * (i + 1), manager(tmp_path, 3), AUTO, INIT) for i in range(6)]       # 0.75 s init
    samples += [at(0.875, manager(tmp_path, 4)), at(1.0, manager(tmp_path, 4))]                 # 0.25 s clone
    samples += [at(1.125, manager(tmp_path, 5), DEEPCOPY, w=0.25),                              # 0.5 s deepcopy
                at(1.375, manager(tmp_path, 5), DEEPCOPY, w=0.25, state="disk")]
    samples += [at(1.5, manager(tmp_path, 7), state="sleep")]                                   # 0.125 s gc
    (u,) = attribute(samples, PHASES)["user_functions"]
    rows = [(c["name"], c["line"], c["seconds"], c["own_s"], c["how"]) for c in u["callees"]]
    assert rows == [("AutoModel.from_config", 3, 0.75, 0.75, "frame"), ("copy.deepcopy", 5, 0.5, 0.5, "frame"),
                    ("torch.Tensor.clone", 4, 0.25, 0.25, "line"), ("gc.collect", 7, 0.125, 0.125, "line")]
    deep = u["callees"][1]
    assert (deep["running_s"], deep["waits"], deep["samples"]) == (0.25, {"disk": 0.25}, 2)
    assert u["callees"][0]["added_bytes"] is None  # no memory timeline given
    # the payload reads it back typed
    (uf,) = SamplingPayload.from_dict({"ok": True, "user_functions": [u]}).user_functions
    assert uf.callees[1].name == "copy.deepcopy" and uf.callees[1].waiting_s == 0.25


def test_memory_join_gives_each_growth_step_to_the_call_sampled_then(tmp_path):
    mib = 2**20
    samples = [at(0.5, manager(tmp_path, 4)), at(0.6, manager(tmp_path, 4)),
               at(1.0, manager(tmp_path, 5), DEEPCOPY), at(1.1, manager(tmp_path, 5), DEEPCOPY),
               at(1.5, manager(tmp_path, 7))]
    # anon RSS: +100 MiB during the clone (0.5-0.6), +60 MiB during deepcopy, of which 20 MiB freed in gc
    rows = [(0.45, 500 * mib), (0.55, 550 * mib), (0.6, 600 * mib), (1.0, 600 * mib), (1.05, 660 * mib),
            (1.5, 640 * mib), (1.9, 640 * mib)]
    (u,) = attribute(samples, PHASES, memory=[(t, a) for t, a in rows])["user_functions"]
    got = {c["name"]: (c["added_bytes"], c["held_bytes"]) for c in u["callees"]}
    assert got["torch.Tensor.clone"] == (100 * mib, 100 * mib)
    assert got["copy.deepcopy"] == (60 * mib, 40 * mib)  # the lowest after it: 640 of 600 before it
    assert got["gc.collect"] == (None, None)  # it added nothing


def test_memory_growth_far_from_any_sample_is_left_unattributed(tmp_path):
    samples = [at(0.5, manager(tmp_path, 4))]
    (u,) = attribute(samples, PHASES, memory=[(1.5, 0), (1.51, 10**9)])["user_functions"]
    assert u["callees"][0]["added_bytes"] is None


def test_timeline_series_from_the_trial_folder_else_the_payload(tmp_path):
    (tmp_path / "memory_timeline.json").write_text(json.dumps({"columns": [], "rows": [[0.1, 5, 1], [0.2, 7, 1]]}))
    assert memjoin.timeline_series(tmp_path, []) == {"anon": [(0.1, 5), (0.2, 7)]}
    ev = {"type": "probe", "name": "memory", "payload": {"timeline": {"rows": [[0.3, 9, 0]]}}}
    assert memjoin.timeline_series(tmp_path / "none", [ev]) == {"anon": [(0.3, 9)]}
    assert memjoin.timeline_series(None, []) == {"anon": []}
    # where CUDA came up, the allocator's column is a series of its own
    cuda = {"columns": ["t_s", "rss_anon_bytes", "rss_file_bytes", "cuda_allocated_bytes"],
            "rows": [[0.1, 5, 1, 0], [0.2, 7, 1, 4096]]}
    (tmp_path / "memory_timeline.json").write_text(json.dumps(cuda))
    assert memjoin.timeline_series(tmp_path, []) == {"anon": [(0.1, 5), (0.2, 7)], "cuda": [(0.1, 0), (0.2, 4096)]}
    (tmp_path / "memory_timeline.json").write_text("[1, 2")  # a torn file: the payload's copy
    assert memjoin.timeline_series(tmp_path, [ev]) == {"anon": [(0.3, 9)]}


def test_a_call_that_grew_the_cuda_allocator_is_named_with_those_bytes(tmp_path):
    mib = 2**20
    samples = [at(t, manager(tmp_path, 4)) for t in (1.45, 1.5, 1.55, 1.6, 1.65, 1.7)]
    anon = [(1.4, 500 * mib), (1.7, 500 * mib)]
    cuda = [(1.4, 0), (1.5, 0), (1.6, 300 * mib), (1.7, 300 * mib)]
    (u,) = attribute(samples, PHASES, memory={"anon": anon, "cuda": cuda})["user_functions"]
    (c,) = u["callees"]
    assert (c["added_cuda_bytes"], c["held_cuda_bytes"]) == (300 * mib, 300 * mib) and c["added_bytes"] is None
