"""loadprof.profile() (in-process, not isolated) and the %%loadprof cell magic: one trial, labelled, hooks undone,
the usual report files; a real tiny model's load tree and findings (slow)."""

from __future__ import annotations

import json
import time

import pytest

import loadprof
from loadprof.core.errors import LoadprofError
from loadprof.core.payloads import SamplingPayload
from loadprof.probes import _imports
from loadprof.results.model import IN_PROCESS


def test_a_block_is_one_trial_labelled_not_isolated_and_leaves_nothing_installed(tmp_path):
    with loadprof.profile("plain", sampling_hz=0) as p:
        sum(range(10_000))
    assert not _imports.watching()
    sweep = p.result
    assert sweep is not None and len(sweep.trials) == 1
    t = sweep.trials[0]
    assert t.status == "ok" and t.harness["isolation"] == IN_PROCESS
    assert any(n.startswith("not isolated") for n in t.notes)
    assert {"memory", "io", "imports"} <= set(t.probes)
    out = p.report(tmp_path / "out")
    assert {"report.json", "report.md", "report.html", "results.jsonl", "sweep.json"} <= {f.name for f in out.iterdir()}
    again = loadprof.load_report(out)
    assert again.trials[0].harness["isolation"] == IN_PROCESS
    assert "not isolated" in (out / "report.md").read_text()


def test_an_exception_in_the_block_propagates_and_fails_the_trial():
    with pytest.raises(ZeroDivisionError):
        with loadprof.profile(sampling_hz=0) as p:
            1 / 0  # noqa: B018
    t = p.result.trials[0]
    assert t.status == "failed" and "ZeroDivisionError" in (t.reason or "")
    assert not _imports.watching()


def test_one_profile_at_a_time():
    with loadprof.profile(sampling_hz=0):
        with pytest.raises(LoadprofError):
            with loadprof.profile(sampling_hz=0):
                pass
    with pytest.raises(LoadprofError):
        _ = loadprof.profile().trial  # no result before the block has run


def test_py_spy_samples_its_own_process_or_says_why(tmp_path):
    with loadprof.profile("sampled", sampling_hz=50) as p:
        end = time.monotonic() + 0.5
        while time.monotonic() < end:
            pass
    t = p.result.trials[0]
    s = t.payload(SamplingPayload)
    assert s is not None
    if s.ok:  # py-spy could ptrace its own parent (root, or ptrace_scope 0)
        assert s.samples_total and s.samples_total > 0
        assert (p.report(tmp_path / "out") / "trials" / t.trial_id / "profile.speedscope.json").is_file()
    else:
        assert any("py-spy" in n or "ptrace" in n or "sampling" in n for n in t.notes), t.notes


class FakeShell:
    """What the magic uses of an IPython shell: register a magic, run a cell (errors shown, not raised), user_ns."""

    def __init__(self) -> None:
        self.user_ns: dict = {}
        self.magics: dict = {}

    def register_magic_function(self, fn, magic_kind: str, magic_name: str) -> None:
        self.magics[(magic_kind, magic_name)] = fn

    def run_cell(self, cell: str):
        class Result:
            error_in_exec = None

        res = Result()
        try:
            exec(cell, self.user_ns)
        except Exception as e:  # noqa: BLE001 - as IPython: shown, kept on the result
            res.error_in_exec = e
        return res


def test_the_magic_runs_the_cell_in_the_namespace_and_files_its_failure(tmp_path, capsys):
    shell = FakeShell()
    loadprof.load_ipython_extension(shell)
    magic = shell.magics[("cell", "loadprof")]
    assert magic(f"--name c --sampling-hz 0 --out {tmp_path / 'out'}", "y = 6 * 7") is None
    assert shell.user_ns["y"] == 42 and shell.user_ns["_loadprof"].result.trials[0].status == "ok"
    assert (tmp_path / "out" / "report.json").is_file()
    magic("--sampling-hz 0", "1 / 0")
    assert shell.user_ns["_loadprof"].result.trials[0].status == "failed"
    assert "in-process (not isolated)" in capsys.readouterr().out
    magic("--bogus", "z = 1")  # a bad option: usage, the cell is not run
    assert "z" not in shell.user_ns


def test_the_cell_magic_profiles_a_cell(tmp_path):
    ipython = pytest.importorskip("IPython", reason="IPython is not installed: the %%loadprof magic is not testable")
    from IPython.core.interactiveshell import InteractiveShell

    assert ipython
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "loadprof")
    shell.run_cell_magic("loadprof", f"--name cell --sampling-hz 0 --out {tmp_path / 'out'}", "x = sum(range(100))")
    p = shell.user_ns["_loadprof"]
    assert shell.user_ns["x"] == 4950 and p.result.trials[0].status == "ok"
    assert json.loads((tmp_path / "out" / "report.json").read_text())["trials"][0]["harness"]["isolation"] == IN_PROCESS
    shell.run_cell_magic("loadprof", "--sampling-hz 0", "1 / 0")  # shown by IPython, filed as the trial's failure
    assert shell.user_ns["_loadprof"].result.trials[0].status == "failed"
    assert not _imports.watching()


@pytest.mark.e2e
def test_a_real_load_and_generate_in_process(tiny_model):
    import torch
    from transformers import AutoModelForCausalLM

    with loadprof.profile("tiny", sampling_hz=0) as p:
        model = AutoModelForCausalLM.from_pretrained(tiny_model)
        model.generate(torch.tensor([[1, 2, 3]]), max_new_tokens=3, do_sample=False)
    assert "forward" not in vars(model)  # the first-forward wrapper is undone with the hooks
    t = p.result.trials[0]
    assert [ph.name for ph in t.phases] == ["load", "generate"]
    assert t.phases[0].children[0].name == f"model:{tiny_model.name}"
    assert t.metrics["load_cost_s"] > 0 and t.metrics["ttft_ms"] > 0
    assert [ph.name for ph in t.phases[1].children if ph.name in ("prefill", "decode")] == ["prefill", "decode"]
