"""One writer per run folder: a second writer exits 2 naming the holder, a stale lock is taken over."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from loadprof.core.errors import LoadprofError
from loadprof.results.jsonl import prepare_out
from loadprof.results.runlock import LOCK, RunLock
from loadprof.run.session import Session

from .test_session import _fake_result, _fake_sweep

HOLD = ("import sys, time; from pathlib import Path; from loadprof.results.runlock import RunLock; "
        "RunLock.acquire(Path(sys.argv[1])); print('held', flush=True); time.sleep(60)")


@pytest.fixture
def held(tmp_path):
    """``tmp_path/out`` locked by another process, as a running sweep holds it; yields its PID."""
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        yield out, proc.pid
    finally:
        proc.kill()
        proc.wait()


def test_a_second_writer_exits_2_naming_the_holder(held):
    out, pid = held
    with pytest.raises(LoadprofError) as e:
        RunLock.acquire(out)
    assert e.value.exit_code == 2 and f"pid {pid}" in e.value.message and "\n" not in e.value.message


def test_in_one_process_too_and_released_on_exit(tmp_path):
    with RunLock.acquire(tmp_path / "out") as lock:
        assert (tmp_path / "out" / LOCK).read_text().strip() == str(os.getpid())
        with pytest.raises(LoadprofError, match=f"pid {os.getpid()}"):
            RunLock.acquire(tmp_path / "out")
    assert not lock.path.exists()
    RunLock.acquire(tmp_path / "out").release()  # free again


def test_a_stale_lock_of_a_dead_process_is_taken_over_with_a_note(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / LOCK).write_text("999999\n")  # its holder died: the file is there, the flock is not
    notes: list[str] = []
    with RunLock.acquire(out, log=notes.append):
        assert (out / LOCK).read_text().strip() == str(os.getpid())
    assert notes == [f"took over the stale lock of {out} left by pid 999999, which is no longer running"]


def test_a_folder_holding_only_a_stale_lock_counts_as_empty(tmp_path):
    (tmp_path / LOCK).write_text("1\n")
    prepare_out(tmp_path, resume=False)


def test_resume_into_a_folder_another_run_writes_exits_2(held, monkeypatch):
    out, pid = held
    monkeypatch.setattr(Session, "run_one", lambda self, trial, env=None: _fake_result(trial))
    t0 = time.monotonic()
    with pytest.raises(LoadprofError, match=f"in use by another loadprof \\(pid {pid}\\)"):
        Session(_fake_sweep(), out, resume=True).run()
    assert time.monotonic() - t0 < 30  # refused at once, not after waiting
    assert not (out / "results.jsonl").exists()


def test_the_cli_second_resume_and_report_exit_2_in_one_line(held):
    from click.testing import CliRunner

    from loadprof.cli.main import main

    from .conftest import EXAMPLES

    out, pid = held
    for args in (["compare", str(EXAMPLES / "quickstart.yaml"), "--resume", "--out", str(out), "--no-progress"],
                 ["report", str(out)]):
        r = CliRunner().invoke(main, args)
        assert r.exit_code == 2, r.output
        assert f"in use by another loadprof (pid {pid})" in r.output and "Traceback" not in r.output
