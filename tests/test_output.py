"""The output folder and results.jsonl: nothing escapes ./loadprof-runs, nothing of the user's is overwritten,
every bad line is skipped and counted, a full disk ends the sweep with what finished kept, the parent never
reaches the network, and user text is printed literally (never as rich markup)."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import loadprof.run.session as session
from loadprof.core.errors import LoadprofError
from loadprof.results.jsonl import (EXIT_OUTPUT, RESULTS, OutputWriteError, default_out, fingerprint,
                                  read_results_file, safe_name)
from loadprof.run.session import Session
from loadprof.strategies.expand import expand

from .conftest import REPO
from .test_cli import loadprof
from .test_session import _fake_result


def _sweep(dtypes=("float32", "bfloat16"), repeat: int = 1, name: str = "out-test"):
    return expand({"name": name, "model": {"synthetic": {"shape": "tiny"}}, "repeat": repeat,
                   "matrix": {"load": {"dtype": list(dtypes)}}}, source="sweep.yaml")


@pytest.fixture
def fake_trials(monkeypatch):
    """No worker: each trial is a small 'skipped' result; returns the ids of the trials that ran."""
    ran: list[str] = []

    def run_one(self, trial, env=None):
        ran.append(trial.id)
        return _fake_result(trial)

    monkeypatch.setattr(Session, "run_one", run_one)
    return ran


# ------------------------------------------------------------------------------------------------ the name

@pytest.mark.parametrize("name", ["/abs/path", "../../../x", "..", ".", ".hidden", "x[/bold]y", "a/../../b",
                                  "-rf", "日本語", "a" * 500, "ok-name_1.2"])
def test_default_folder_stays_inside_loadprof_runs(tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    out = default_out(_sweep(name=name))
    root = (tmp_path / "loadprof-runs").resolve()
    assert out.resolve().parent == root
    component = safe_name(name)
    assert component and len(component) <= 64 and not component.startswith((".", "-"))
    assert set(component) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


def test_sweep_named_like_a_path_writes_only_inside_loadprof_runs(tmp_path, monkeypatch, fake_trials):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    sweep = _sweep(name="../../escaped")
    out = default_out(sweep)
    Session(sweep, out).run()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["work"]
    assert [p.name for p in work.iterdir()] == ["loadprof-runs"]
    (run,) = (work / "loadprof-runs").iterdir()
    assert run.name.startswith("escaped-") and (run / RESULTS).is_file()


# ------------------------------------------------------------------------------------------ folder rules

def test_existing_non_empty_folder_is_refused_and_left_alone(tmp_path, fake_trials):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "report.html").write_text("my own report")
    (out / "notes.txt").write_text("my notes")
    with pytest.raises(LoadprofError) as e:
        Session(_sweep(), out).run()
    assert e.value.exit_code == 2 and str(out) in e.value.message and "--resume" in e.value.hint
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", "report.html"]
    assert (out / "report.html").read_text() == "my own report" and fake_trials == []


def test_empty_folder_is_fine_and_resume_needs_a_sweep(tmp_path, fake_trials):
    empty = tmp_path / "empty"
    empty.mkdir()
    Session(_sweep(), empty).run()
    assert len(fake_trials) == 2
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("x")
    for folder in (other, tmp_path / "absent"):
        with pytest.raises(LoadprofError) as e:
            Session(_sweep(), folder, resume=True).run()
        assert e.value.exit_code == 2 and "sweep.json" in e.value.message


def test_cli_refuses_an_existing_folder_before_running(tmp_path):
    y = tmp_path / "s.yaml"
    y.write_text("model: {synthetic: {shape: tiny}}\n")
    out = tmp_path / "mine"
    out.mkdir()
    (out / "report.html").write_text("mine")
    r = loadprof("compare", str(y), "--out", str(out), "--no-progress")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert f"output folder {out} exists and is not empty" in r.stderr
    assert [p.name for p in out.iterdir()] == ["report.html"]
    r = loadprof("compare", str(y), "--out", str(tmp_path / "new"), "--force")
    assert r.returncode == 2 and "--force goes with --resume" in r.stderr


# ------------------------------------------------------------------------------------------- fingerprint

def test_resume_with_another_sweep_is_refused_unless_forced(tmp_path, fake_trials):
    out = tmp_path / "out"
    first = _sweep(("float32", "bfloat16"))
    Session(first, out).run()
    record = json.loads((out / "sweep.json").read_text())
    assert record["fingerprint"] == fingerprint([s.id for s in first.strategies], 1)
    Session(first, out, resume=True).run()  # the same sweep resumes
    other = _sweep(("float32", "float16"))
    with pytest.raises(LoadprofError) as e:
        Session(other, out, resume=True).run()
    assert e.value.exit_code == 2 and "--force" in e.value.hint
    assert "1 strategies not in the original sweep" in e.value.message
    assert "1 of the original strategies missing" in e.value.message
    with pytest.raises(LoadprofError) as e:
        Session(_sweep(("float32", "bfloat16"), repeat=2), out, resume=True).run()
    assert "repeat 2 instead of 1" in e.value.message
    assert json.loads((out / "sweep.json").read_text()) == record  # a refused resume changes nothing
    fake_trials.clear()
    result = Session(other, out, resume=True, force=True).run()
    assert fake_trials == [other.strategies[1].id + "-r0"]  # float32 was already done
    assert {t.strategy_id for t in result.trials} == {s.id for s in other.strategies}
    forced = json.loads((out / "sweep.json").read_text())
    assert forced["mixes"] == [record["fingerprint"]] and forced["fingerprint"] != record["fingerprint"]


def test_sweep_json_without_a_fingerprint_still_resumes(tmp_path, fake_trials):
    out = tmp_path / "out"
    sweep = _sweep()
    Session(sweep, out).run()
    old = json.loads((out / "sweep.json").read_text())
    for key in ("fingerprint", "strategy_ids"):
        del old[key]
    (out / "sweep.json").write_text(json.dumps(old))
    Session(sweep, out, resume=True).run()
    with pytest.raises(LoadprofError):
        Session(_sweep(("float16",)), out, resume=True).run()


# ------------------------------------------------------------------------------------- results.jsonl lines

def _bad_lines(good: dict) -> list[bytes]:
    metrics_list = dict(good, metrics=[])
    phases_map = dict(good, phases={"load": 1})
    bad_status = dict(good, status="exploded")
    escaping_id = dict(good, trial_id="../../etc")
    string_seconds = dict(good, metrics={"load_s": "fast"})
    return [b"\xff\xfe not utf-8 {}", b"[" * 100_000, json.dumps(metrics_list).encode(),
            json.dumps(phases_map).encode(), json.dumps(bad_status).encode(), json.dumps(escaping_id).encode(),
            json.dumps(string_seconds).encode(), b"[1, 2, 3]", b"{not json"]


def test_every_bad_line_is_skipped_counted_and_rerun_on_resume(tmp_path, fake_trials):
    out = tmp_path / "out"
    sweep = _sweep(repeat=2)
    Session(sweep, out).run()
    lines = (out / RESULTS).read_bytes().splitlines()
    assert len(lines) == 4
    mangled = json.loads(lines[1])
    mangled["metrics"] = []  # this trial's only line is now unreadable: --resume runs it again
    bad = _bad_lines(json.loads(lines[0]))
    data = b"\n".join([lines[0], *bad, json.dumps(mangled).encode(), lines[2], b"", lines[3][:200]])
    (out / RESULTS).write_bytes(data)  # the last line is torn (no newline): a sweep killed mid-write
    read = read_results_file(out)
    assert [t.trial_id for t in read.trials] == [json.loads(x)["trial_id"] for x in (lines[0], lines[2])]
    assert len(read.skipped) == len(bad) + 2
    reasons = dict(read.skipped)
    assert reasons[2].startswith("invalid UTF-8") and reasons[3] == "JSON nested too deep"
    assert reasons[4] == "metrics is a list, not a mapping" and "torn last line" in reasons[len(bad) + 5]
    warning = read.warning()
    assert warning.startswith(f"skipped {len(bad) + 2} unreadable lines of results.jsonl (line 2: invalid UTF-8")
    assert "\n" not in warning
    assert (out / RESULTS).read_bytes() == data  # reading never rewrites the user's file
    fake_trials.clear()
    logged: list[str] = []
    result = Session(sweep, out, resume=True, log=logged.append).run()
    assert sorted(fake_trials) == sorted([json.loads(lines[1])["trial_id"], json.loads(lines[3])["trial_id"]])
    assert any(m.startswith("skipped ") for m in logged) and len(result.trials) == 4
    assert (out / RESULTS).read_bytes().startswith(data)  # only appended to


def test_an_overlong_line_is_skipped_without_reading_it_whole(tmp_path, fake_trials):
    out = tmp_path / "out"
    Session(_sweep(("float32",)), out).run()
    good = (out / RESULTS).read_bytes()
    (out / RESULTS).write_bytes(b'{"x": "' + b"a" * 5000 + b'"}\n' + good)
    read = read_results_file(out, limit=4096)
    assert len(read.trials) == 1 and read.skipped == [(1, "longer than 4,096 bytes")]


def test_report_command_skips_bad_lines_with_one_warning(tmp_path, fake_trials):
    out = tmp_path / "out"
    Session(_sweep(), out).run()
    (out / "report.json").unlink()
    with (out / RESULTS).open("ab") as f:
        f.write(b"\xff\n" + b"[" * 100_000 + b"\n")
    r = loadprof("report", str(out))
    assert r.returncode == 0, r.stderr
    assert "skipped 2 unreadable lines of results.jsonl (line 3: invalid UTF-8" in r.stderr
    assert "Traceback" not in r.stderr


# ------------------------------------------------------------------------------------------- write errors

def _make_unwritable(folder: Path) -> bool:
    """Read-only for this process: chmod as a user; as root (chmod is no barrier) the immutable attribute."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return True
    chattr = shutil.which("chattr")
    return bool(chattr) and subprocess.run([chattr, "+i", str(folder)], capture_output=True).returncode == 0


def _make_writable(folder: Path) -> None:
    if os.geteuid() != 0:
        folder.chmod(0o755)
    else:
        subprocess.run(["chattr", "-i", str(folder)], capture_output=True)


def test_read_only_folder_exits_2_before_anything_runs(tmp_path, fake_trials):
    ro = tmp_path / "ro"
    ro.mkdir()
    if not _make_unwritable(ro):
        pytest.skip("cannot make a read-only folder here")
    try:
        for out in (ro, ro / "sub"):
            with pytest.raises(LoadprofError) as e:
                Session(_sweep(), out).run()
            assert e.value.exit_code == 2 and e.value.message.startswith(f"cannot write to {out}: ")
        assert fake_trials == []
        y = tmp_path / "s.yaml"
        y.write_text("model: {synthetic: {shape: tiny}}\n")
        r = loadprof("compare", str(y), "--out", str(ro / "sub"), "--no-progress")
        assert r.returncode == 2 and "Traceback" not in r.stderr  # refused by preflight, before the Session
        assert f"error: cannot create the output folder {ro / 'sub'}: {ro} is not writable" in r.stderr
        assert not list(ro.iterdir())
    finally:
        _make_writable(ro)


def test_disk_full_mid_run_keeps_finished_lines_and_says_how_to_continue(tmp_path, monkeypatch, fake_trials):
    real_append, calls = session.append_result, []

    def append(out, result):
        calls.append(result.trial_id)
        if len(calls) == 2:
            with open(out / RESULTS, "ab") as f:
                f.write(b'{"trial_id": "torn')  # the write got half way
            raise OSError(errno.ENOSPC, "No space left on device")
        real_append(out, result)

    monkeypatch.setattr(session, "append_result", append)
    out = tmp_path / "out"
    with pytest.raises(OutputWriteError) as e:
        Session(_sweep(repeat=2), out).run()
    assert e.value.exit_code == EXIT_OUTPUT == 74
    assert e.value.message == (f"disk full while writing {out / RESULTS}: 1 trials kept; free space and continue "
                               f"with `loadprof compare sweep.yaml --resume --out {out}`")
    assert len(fake_trials) == 2  # it stopped at the failed write
    assert [t.trial_id for t in e.value.result.trials] == calls[:1]
    read = read_results_file(out)
    assert [t.trial_id for t in read.trials] == calls[:1] and "torn last line" in read.warning()
    assert json.loads((out / "report.json").read_text())["trials"][0]["trial_id"] == calls[0]
    monkeypatch.setattr(session, "append_result", real_append)
    fake_trials.clear()
    Session(_sweep(repeat=2), out, resume=True).run()
    assert len(fake_trials) == 3 and len(read_results_file(out).trials) == 4


def test_report_that_does_not_fit_keeps_every_results_line(tmp_path, monkeypatch, fake_trials):
    def full(out, result):
        raise OSError(errno.EFBIG, "File too large")

    monkeypatch.setattr(session, "write_report", full)
    out = tmp_path / "out"
    with pytest.raises(OutputWriteError) as e:
        Session(_sweep(), out).run()
    assert e.value.message.startswith(f"file size limit reached while writing {out / 'report.json'}: 2 trials kept")
    assert len(read_results_file(out).trials) == 2 and not read_results_file(out).skipped


SWEEP_AT = """
name: limited
model: {{path: {model}}}
base:
  load: {{device_map: cpu}}
  generate: {{prompt_tokens: 4, max_new_tokens: 2, warmup: 0}}
  probes: [phases]
include:
{include}
"""


@pytest.mark.e2e
def test_file_size_limit_mid_run_exits_74_with_finished_trials_kept(tiny_model, tmp_path):
    """A real ``ulimit -f``: SIGXFSZ would kill the sweep mid-line; it is ignored, the write raises EFBIG."""
    one = tmp_path / "one.yaml"
    one.write_text(SWEEP_AT.format(model=tiny_model, include="  - {label: a}"))
    r = loadprof("compare", str(one), "--out", str(tmp_path / "sized"), "--no-progress")
    assert r.returncode == 0, r.stderr
    line = (tmp_path / "sized" / RESULTS).stat().st_size
    two = tmp_path / "two.yaml"
    two.write_text(SWEEP_AT.format(model=tiny_model, include="  - {label: a}\n  - {label: b, load: {dtype: float32}}"))
    out = tmp_path / "out"
    limit_kib = (line + line // 2) // 1024 + 1  # one line fits, two do not
    cmd = f"ulimit -f {limit_kib}; exec {sys.executable} -m loadprof.cli.main compare {two} --out {out} --no-progress"
    r = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, cwd=REPO, timeout=600)
    assert r.returncode == 74, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    assert f"file size limit reached while writing {out / RESULTS}: 1 trials kept" in r.stderr
    assert f"--resume --out {out}" in r.stderr
    read = read_results_file(out)
    assert len(read.trials) == 1 and read.trials[0].label in ("a", "b")  # run order is a seeded shuffle
    assert not (out / "report.json.tmp").exists()


# ------------------------------------------------------------------------------------------------- offline

NO_NETWORK = """
import socket, sys
attempts = []
def refuse(*args, **kwargs):
    attempts.append(args[:1])
    raise OSError("network refused by the test")
socket.getaddrinfo = refuse
socket.socket.connect = refuse
from loadprof.analysis.estimate import estimate_command
from loadprof.core.errors import LoadprofError
try:
    estimate_command({target!r})
    print("ESTIMATED")
except LoadprofError as e:
    print("ERROR", e.exit_code, e.message, "|", e.hint)
from loadprof.cli.main import main
try:
    main(["estimate", {target!r}])
except SystemExit as e:
    print("EXIT", e.code)
print("ATTEMPTS", len(attempts))
"""


def _offline_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env["HF_HUB_CACHE"] = str(tmp_path / "hub")
    env["HF_HOME"] = str(tmp_path / "hf-home")
    return env


def test_estimate_of_a_missing_hub_model_never_reaches_the_network(tmp_path):
    r = subprocess.run([sys.executable, "-c", NO_NETWORK.format(target="someorg/somemodel")], capture_output=True,
                       text=True, cwd=REPO, env=_offline_env(tmp_path), timeout=300)
    assert "ATTEMPTS 0" in r.stdout, r.stdout + r.stderr
    assert "ERROR 2 no config for 'someorg/somemodel': it is not in the local Hugging Face cache" in r.stdout
    assert "hf download someorg/somemodel" in r.stdout and "EXIT 2" in r.stdout
    assert "hf download someorg/somemodel" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.e2e
def test_estimate_of_a_cached_hub_model_reads_the_cache_only(tmp_path):
    from loadprof.strategies.model import SyntheticSpec
    from loadprof.strategies.synthetic import config_dict

    repo = tmp_path / "hub" / "models--someorg--tiny"
    snap = repo / "snapshots" / "0123abcd"
    snap.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    (snap / "config.json").write_text(json.dumps(config_dict(SyntheticSpec(shape="tiny"))))
    r = subprocess.run([sys.executable, "-c", NO_NETWORK.format(target="someorg/tiny")], capture_output=True,
                       text=True, cwd=REPO, env=_offline_env(tmp_path), timeout=300)
    assert "ESTIMATED" in r.stdout and "EXIT 0" in r.stdout and "ATTEMPTS 0" in r.stdout, r.stdout + r.stderr


# ---------------------------------------------------------------------------------------------- literal text

HOSTILE_NAME = "x[/bold]y"
HOSTILE = "[/oops]"


@pytest.mark.e2e
def test_user_text_is_printed_literally_everywhere(tmp_path):
    y = tmp_path / "hostile.yaml"
    y.write_text(textwrap.dedent(f"""
        name: '{HOSTILE_NAME}'
        description: 'a [red]description[/] [/'
        model: {{synthetic: {{shape: tiny}}}}
        base:
          load: {{device_map: cpu}}
          generate: {{prompt_tokens: 4, max_new_tokens: 2, warmup: 0}}
          probes: [phases]
        include:
          - {{label: '{HOSTILE}'}}
          - {{label: '[bold]b[/i]', load: {{dtype: float32}}}}
    """))
    runs = {"expand": loadprof("expand", str(y))}
    out = tmp_path / "out [/x]"
    runs["compare"] = loadprof("compare", str(y), "--out", str(out), "--no-progress")
    runs["report"] = loadprof("report", str(out))
    runs["recommend"] = loadprof("recommend", str(out))
    runs["diff"] = loadprof("diff", str(out), str(out))
    for cmd, r in runs.items():
        assert "MarkupError" not in r.stderr and "Traceback" not in r.stderr, (cmd, r.stderr)
        assert r.returncode in ((0, 3) if cmd == "diff" else (0,)), (cmd, r.returncode, r.stderr)
    for cmd in ("expand", "compare", "report"):
        assert HOSTILE in runs[cmd].stdout and "[bold]b[/i]" in runs[cmd].stdout, cmd
    assert HOSTILE_NAME in runs["compare"].stdout and str(out) in runs["compare"].stdout
    assert HOSTILE_NAME in runs["recommend"].stdout and HOSTILE_NAME in runs["diff"].stdout
