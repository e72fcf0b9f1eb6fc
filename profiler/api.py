"""The Python API, for notebooks and scripts: the same sweep ``loadprof compare`` runs, returned as objects.

    import loadprof
    sweep = loadprof.compare("strategies/examples/quickstart.yaml")   # or a dict of the same YAML
    sweep.to_pandas()            # one row per trial (pandas: pip install 'loadprof[pandas]')
    sweep.recommendations.get("load")
    again = loadprof.load_report(sweep_folder)

    with loadprof.profile() as p:  # this process, not isolated (loadprof.run.inprocess)
        model = AutoModelForCausalLM.from_pretrained(path)
    p.result.findings; p.report("out/")

Everything the CLI checks is checked here too (bad input raises ``SpecError`` before anything runs), every
trial still runs in its own process, and the output folder is the CLI's: report files included.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

from loadprof.core.errors import LoadprofError, SpecError
from loadprof.results.model import SweepResult, TrialResult


def _sweep(source: str | Path | Mapping[str, Any], base_dir: str | Path | None) -> Any:
    from loadprof.strategies.expand import expand, load_sweep

    if isinstance(source, Mapping):
        return expand(dict(source), source="<dict>", base_dir=Path(base_dir) if base_dir else None)
    if isinstance(source, (str, Path)):
        return load_sweep(source)
    raise SpecError(f"expected a YAML path or a dict, got {type(source).__name__}")


def compare(sweep: str | Path | Mapping[str, Any], out: str | Path | None = None, *, resume: bool = False,
            base_dir: str | Path | None = None,
            on_trial: Callable[[TrialResult, int, int], None] | None = None, executor: str = "local",
            ray_address: str | None = None, jobs: int | None = None,
            gpus_per_trial: int | None = None) -> SweepResult:
    """Run every trial of ``sweep`` (a YAML path, or a dict with the YAML's keys; relative paths in a dict
    resolve against ``base_dir``, default the current folder) and return the analysed ``SweepResult``.

    ``out`` defaults to ``./loadprof-runs/<name>-<timestamp>``; report.json/md/html/csv are written there as by
    the CLI. ``resume=True`` continues an interrupted sweep in ``out``. ``on_trial(result, i, n)`` is called as
    each trial finishes. ``executor`` ("local" or "ray"), ``ray_address``, ``jobs`` and ``gpus_per_trial`` are
    the CLI's options of the same names (trials that ran several at once say so in every report)."""
    from loadprof.run.options import make_executor
    from loadprof.run.session import Session, default_out
    from loadprof.strategies.preflight import preflight

    runner, _ = make_executor(executor, ray_address=ray_address, jobs=jobs, gpus_per_trial=gpus_per_trial)
    sw = _sweep(sweep, base_dir)
    preflight(sw.strategies)
    if out is None:
        if resume:
            raise LoadprofError("resume needs out= (the folder of the sweep to continue)", exit_code=2)
        out = default_out(sw)
    return Session(sw, Path(out), resume=resume, on_trial=on_trial, executor=runner).run()  # and the reports


def profile(name: str = "profile", *, sampling_hz: int | None = None) -> Any:
    """``with loadprof.profile() as p:``: the block's loads, generate calls, lazy imports and memory, in this
    process (not isolated: no cold import, the process's earlier state counts; the result says so). After the
    block, ``p.result`` is a one-trial ``SweepResult`` and ``p.report(out_dir)`` writes the usual files."""
    from loadprof.run.inprocess import profile as _profile

    return _profile(name, sampling_hz=sampling_hz)


def load_report(path: str | Path) -> SweepResult:
    """A finished (or interrupted) sweep read back from its folder's report.json (or the file itself), through the
    one validated reader (``loadprof.results.report_file``): an unreadable file raises ``LoadprofError`` naming
    it; skipped trials are a ``ReportWarning``."""
    from loadprof.results.report_file import load_report as read

    return read(path)
