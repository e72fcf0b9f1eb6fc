"""The CLI as a user runs it: a real sweep on a synthesized model, bad input, no-torch commands."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from .conftest import EXAMPLES, REPO
from .helpers import default_stop_signals


def loadprof(*args: str, cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "loadprof.cli.main", *args], capture_output=True, text=True,
                          cwd=cwd or REPO, timeout=timeout)


#: time a busy machine may leave outside named phases whatever their length: two 10 ms scheduler slices
OTHER_SLACK_S = 0.02


def _write(tmp_path: Path, text: str, name: str = "sweep.yaml") -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


NO_TORCH = """
import sys
from loadprof.cli.main import main
try:
    main({args!r})
except SystemExit as e:
    code = e.code
heavy = sorted(m for m in ("torch", "transformers", "accelerate", "safetensors") if m in sys.modules)
print("HEAVY:" + ",".join(heavy))
"""


@pytest.mark.parametrize("args", [["--help"], ["expand", str(EXAMPLES / "quickstart.yaml")],
                                  ["expand", "--json", str(EXAMPLES / "faults.yaml")], ["compare", "--help"]])
def test_help_and_expand_never_import_torch(args):
    out = subprocess.run([sys.executable, "-c", NO_TORCH.format(args=args)], capture_output=True, text=True, cwd=REPO)
    assert "HEAVY:\n" in out.stdout, out.stdout + out.stderr


def test_expand_prints_the_matrix():
    r = loadprof("expand", str(EXAMPLES / "quickstart.yaml"))
    assert r.returncode == 0
    assert "6 trials" in r.stdout and "file_cache=cold" in r.stdout


def test_misspelled_key_exits_2_and_names_the_right_key(tmp_path):
    y = _write(tmp_path, """
        model: {synthetic: {shape: tiny}}
        base:
          load: {dtyp: float16}
    """)
    for cmd in ("compare", "expand"):
        r = loadprof(cmd, str(y), "--out", str(tmp_path / "out")) if cmd == "compare" else loadprof(cmd, str(y))
        assert r.returncode == 2, r.stderr
        assert "dtype" in r.stderr and "base.load.dtyp" in r.stderr
    assert not (tmp_path / "out").exists()  # nothing ran


def test_bad_value_exits_2_naming_allowed_values(tmp_path):
    y = _write(tmp_path, """
        model: {synthetic: {shape: tiny}}
        matrix:
          load: {device_map: [cpu, gpu]}
    """)
    r = loadprof("compare", str(y))
    assert r.returncode == 2 and "matrix.load.device_map[1]" in r.stderr and "cuda" in r.stderr


def test_missing_file_exits_2(tmp_path):
    r = loadprof("compare", str(tmp_path / "nope.yaml"))
    assert r.returncode == 2


@pytest.mark.e2e
def test_compare_end_to_end_then_report_and_resume(tmp_path):
    y = _write(tmp_path, """
        name: e2e
        model: {synthetic: {shape: tiny, max_shard_size: 100KB}}
        base:
          generate: {prompt_tokens: 8, max_new_tokens: 4, warmup: 0}
          timeout_s: 300
        matrix:
          load: {dtype: [auto, float32]}
    """)
    out = tmp_path / "out"
    r = loadprof("compare", str(y), "--out", str(out), "--no-progress")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "2 ok" in r.stdout and "decode tok/s" in r.stdout
    report = json.loads((out / "report.json").read_text())
    assert report["schema_version"] == 3 and report["name"] == "e2e"
    ok = [t for t in report["trials"] if t["status"] == "ok"]
    assert len(ok) == 2
    for t in ok:
        phases = t["phases"]
        assert [p["name"] for p in phases][:2] == ["import", "load"]
        assert all(p["duration_s"] >= 0 for p in phases)
        assert all(a["end_s"] <= b["start_s"] for a, b in zip(phases, phases[1:]))
        covered = sum(p["duration_s"] for p in phases)
        # the phases cover the trial's wall but for its own bookkeeping: 5% of a long trial, ~20 ms of a short one
        # (a forked trial whose lazy import was shared runs in a few hundred ms)
        assert t["wall_s"] - max(0.05 * t["wall_s"], 0.03) <= covered <= t["wall_s"]
        assert t["harness"]["file_cache"]["action"] == "warm"
        assert t["harness"]["file_cache"]["resident_fraction"] == 1.0
        assert (out / "trials" / t["trial_id"] / "stderr.log").exists()
    assert len((out / "results.jsonl").read_text().splitlines()) == 2
    again = loadprof("report", str(out))
    assert again.returncode == 0 and "e2e" in again.stdout
    rerun = loadprof("compare", str(y), "--out", str(out))
    assert rerun.returncode == 2 and "--resume" in rerun.stderr
    resumed = loadprof("compare", str(y), "--out", str(out), "--resume", "--no-progress")
    assert resumed.returncode == 0 and "2 trials already finished, 0 to run" in resumed.stdout


@pytest.mark.e2e
def test_make_model_prints_a_loadable_path(tmp_path):
    r = loadprof("make-model", "--shape", "tiny-gpt2", "--dtype", "float32")
    assert r.returncode == 0, r.stderr
    path = Path(r.stdout.strip().splitlines()[-1])
    assert (path / "config.json").exists() and any(path.glob("*.safetensors"))
    bad = loadprof("make-model", "--shape", "tiny", "--arch", "gpt3")
    assert bad.returncode == 2 and "gpt2" in bad.stderr


@pytest.mark.e2e
def test_estimate_answers_from_config_and_rejects_bad_options():
    r = loadprof("estimate", "qwen2.5-7b", "--json", "--batch-size", "2", "--prompt-tokens", "100",
                 "--max-new-tokens", "28")
    assert r.returncode == 0, r.stderr
    (e,) = json.loads(r.stdout)
    assert e["param_count"] == 7_615_616_512 and e["weight_bytes"] == 2 * 7_615_616_512
    assert e["kv_bytes_per_token"] == 2 * 28 * 4 * 128 * 2
    bad = loadprof("estimate", "qwen2.5-7b", "--dtype", "float8")
    assert bad.returncode == 2 and "float8" in bad.stderr


def _reached(state) -> bool:
    """``state()``, where a file not written yet or a process already gone is "not yet"."""
    import psutil

    try:
        return bool(state())
    except (OSError, psutil.Error):
        return False


@pytest.mark.e2e
def test_ctrl_c_keeps_finished_trials_exits_130_and_resumes(tmp_path):
    import signal
    import time

    import psutil

    from loadprof.strategies.expand import load_sweep

    for i in range(50):  # trials run in a seeded shuffle: pick a timeout (part of the id) that runs quick first
        y = _write(tmp_path, f"""
            name: interrupt
            model: {{synthetic: {{shape: tiny}}}}
            base: {{generate: false, isolation: fresh}}  # the worker is this command's own child, found by name
            include:
              - {{label: quick{i}, timeout_s: {100 + i}}}
              - {{label: hang, timeout_s: 300, load: {{loader: {{target: "faulty_loaders:hang", sys_path: ["{EXAMPLES}"]}}}}}}
        """)
        if load_sweep(y).trials()[0].strategy.label == f"quick{i}":
            break
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "loadprof.cli.main", "compare", str(y), "--out", str(out),
                             "--no-progress"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=default_stop_signals)  # as a terminal's loadprof has them
    def line_written() -> bool:
        return (out / "results.jsonl").read_bytes().endswith(b"\n")

    def worker_runs() -> bool:  # the quick trial's worker was reaped before its line was written: this is the next
        return any("loadprof.worker.trial" in " ".join(c.cmdline()) for c in psutil.Process(proc.pid).children())

    # states, not sleeps: the quick trial's line is written, then the hanging trial's worker runs
    for what, reached in (("the quick trial's line", line_written), ("the hanging trial's worker", worker_runs)):
        deadline = time.monotonic() + 600
        while proc.poll() is None and time.monotonic() < deadline and not _reached(reached):
            time.sleep(0.2)
        assert proc.poll() is None and _reached(reached), what
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 130, stdout + stderr
    assert "--resume" in stdout
    report = json.loads((out / "report.json").read_text())
    assert report["interrupted"] is True and [t["label"] for t in report["trials"]] == [f"quick{i}"]
    lines = (out / "results.jsonl").read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["status"] == "ok"


@pytest.mark.e2e
def test_cold_and_warm_load_of_qwen05b_acceptance(tmp_path):
    """Issue acceptance: >= 95% of the load in named phases; cold reads more; bytes read ~ checkpoint size."""
    from loadprof.strategies import synthetic
    from loadprof.strategies.model import SyntheticSpec

    y = _write(tmp_path, """
        name: coldwarm
        model: {synthetic: {shape: qwen2.5-0.5b, dtype: bfloat16}}
        base: {generate: false}
        matrix:
          load: {file_cache: [warm, cold]}
    """)
    out = tmp_path / "out"
    r = loadprof("compare", str(y), "--out", str(out), "--no-progress")
    assert r.returncode == 0, r.stdout + r.stderr
    warm, cold = json.loads((out / "report.json").read_text())["trials"]
    for t in (warm, cold):
        load = next(p for p in t["phases"] if p["name"] == "load")
        # named phases explain the load: what they miss is a few % of it, plus at most a couple of scheduler
        # time slices (a busy 2-core machine once put 11.6 ms of a 0.2 s load outside them)
        assert load["other_s"] <= max(0.05 * load["duration_s"], OTHER_SLACK_S), load
    assert cold["metrics"]["load_read_thread_s"] > warm["metrics"]["load_read_thread_s"]
    assert cold["harness"]["file_cache"]["resident_fraction"] == 0.0
    ckpt = sum(p.stat().st_size for p in synthetic.model_dir(SyntheticSpec(shape="qwen2.5-0.5b")).glob("*.safetensors"))
    assert abs(cold["metrics"]["storage_read_bytes"] / ckpt - 1) < 0.05
    assert cold["metrics"]["disk_seq_read_gb_s"] > 0 and 0 < cold["metrics"]["read_bandwidth_fraction"]


@pytest.mark.e2e
def test_max_new_tokens_sweep_static_grows_by_formula_dynamic_does_not(tmp_path):
    from loadprof.strategies.synthetic import config_dict
    from loadprof.strategies.model import SyntheticSpec

    y = _write(tmp_path, """
        name: prealloc
        model: {synthetic: {shape: tiny, dtype: bfloat16}}
        base:
          generate: {prompt_tokens: 8, batch_size: 2, stop_after: 9, warmup: 0}
        matrix:
          generate: {cache_implementation: [static, dynamic], max_new_tokens: "128..1024*2"}
    """)
    out = tmp_path / "out"
    r = loadprof("compare", str(y), "--out", str(out), "--no-progress")
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads((out / "report.json").read_text())
    cfg = config_dict(SyntheticSpec(shape="tiny"))
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    formula = 2 * cfg["num_hidden_layers"] * cfg["num_key_value_heads"] * head_dim * 2 * 2  # bf16, batch 2
    curves = {c["fixed"]["generate.cache_implementation"]: c for c in report["studies"]["max_new_tokens"]}
    static, dynamic = curves["static"], curves["dynamic"]
    assert static["growth"] == "linear" and static["fits"]["generate_start_alloc_bytes"]["r2"] > 0.99
    assert abs(static["alloc_bytes_per_cap_token"] / formula - 1) < 0.05
    assert "cache_utils.py" in static["sites"][0]["site"]
    assert dynamic["growth"] == "none"
    prealloc = [f for f in report["findings"] if f["kind"] == "max_new_tokens_preallocation"]
    assert len(prealloc) == 1 and "cache_implementation=static" in prealloc[0]["label"]
    assert "per token of max_new_tokens" in prealloc[0]["title"]
    for t in report["trials"]:
        gen = next(p for p in t["phases"] if p["name"] == "generate")
        assert [c["name"] for c in gen["children"]] == ["prepare", "prefill", "decode", "finish"]
        assert gen["other_s"] <= max(0.05 * gen["duration_s"], OTHER_SLACK_S)
        assert t["metrics"]["new_tokens"] == 9


@pytest.mark.e2e
def test_batch_sweep_prints_speedup_and_efficiency_table(tmp_path):
    y = _write(tmp_path, """
        name: batches
        model: {synthetic: {shape: tiny}}
        base: {generate: {prompt_tokens: 16, max_new_tokens: 16, warmup: 1}}
        matrix:
          generate: {batch_size: [1, 2, 4, 8]}
    """)
    r = loadprof("compare", str(y), "--out", str(tmp_path / "out"), "--no-progress")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "batch scaling" in r.stdout and "speedup" in r.stdout and "efficiency" in r.stdout
    (b,) = json.loads((tmp_path / "out" / "report.json").read_text())["studies"]["batch_size"]
    assert [row["batch_size"] for row in b["rows"]] == [1, 2, 4, 8] and b["rows"][0]["speedup"] == 1.0
    for row in b["rows"]:
        assert row["efficiency_pct"] == pytest.approx(100 * row["speedup"] / row["batch_size"], rel=1e-6)
        assert row["kv_bytes_total"] == row["kv_bytes_per_seq"] * row["batch_size"]
